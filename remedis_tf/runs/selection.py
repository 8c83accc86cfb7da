"""Selection on validation: one fine-tuning arm trained at each learning rate of a small
grid, each run keeping its best checkpoint on a validation split (``run_dir/best``,
:func:`remedis_tf.runs.stages.run_supervised`), and the learning rate whose best checkpoint
scores highest on that split chosen.

The validation split must be disjoint from the test set (for a new site: a patient-level
split held out once, :func:`remedis_tf.data.label_fraction.holdout_split`). The metric is
the task's own (``selection_metric``; default mean AUC, or top-1 accuracy for
multi-class). Ties keep the first learning rate of the grid. The choice, the grid and every
validation score go to ``<root>/selection.json``; a finished selection is read back
instead of recomputed, so a sweep resumes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.data import augment as augment_lib
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, TrainingError
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import stages
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig

SELECTION_FILE = "selection.json"


@dataclasses.dataclass(frozen=True)
class Selection:
  """The chosen run of one arm.

  Attributes:
    run_dir: the run of the chosen learning rate (evaluate its ``best/`` checkpoint).
    lr: the chosen base learning rate.
    metric: the validation metric.
    value: the chosen run's best validation value.
    step: the step of that checkpoint.
    grid: ``{"%g" % lr: best validation value}`` for every learning rate tried.
    steps: the total training steps of each run.
  """
  run_dir: str
  lr: float
  metric: str
  value: float
  step: int
  grid: Dict[str, float]
  steps: int

  def to_dict(self) -> Dict:
    return dataclasses.asdict(self)


def lr_dir(root: str, lr: float) -> str:
  """``root/lr<lr>`` (``%g``): the run directory of one grid point."""
  return os.path.join(root, f"lr{lr:g}")


def _best_info(run_dir: str) -> Dict:
  path = os.path.join(run_dir, stages.BEST_SUBDIR, stages.BEST_INFO)
  if not tf.io.gfile.exists(path):
    raise ConfigError(f"{run_dir} has no {stages.BEST_SUBDIR}/{stages.BEST_INFO}; the run "
                      "needs a validation set and at least one evaluation")
  return io_utils.read_json(path)


def choose(values: Dict[float, float], grid: Sequence[float]) -> float:
  """The grid point with the highest finite value (ties and all-NaN: the first)."""
  finite = [lr for lr in grid if math.isfinite(values[lr])]
  if not finite:
    return grid[0]
  return max(finite, key=lambda lr: (values[lr], -list(grid).index(lr)))


def finetune_selected(train: Manifest, validation: Manifest, supervised: SupervisedConfig,
                      optimizer: OptimizerConfig,
                      augment: Optional[augment_lib.AugmentConfig], image_size: int,
                      make_loop: Callable[[str], LoopConfig], lr_grid: Sequence[float],
                      root: str, runtime: stages.RuntimeConfig = stages.RuntimeConfig(),
                      metric: Optional[str] = None,
                      log: Callable[[str], None] = print) -> Optional[Selection]:
  """Fine-tunes one arm at every learning rate of ``lr_grid`` (``optimizer.base_lr``
  replaced) into ``root/lr<lr>`` with model selection on ``validation``; returns the
  :class:`Selection`, or None when a run was preempted (run again to resume). A learning
  rate whose run diverges (non-finite loss) scores its best checkpoint validated before
  that, or NaN (never chosen unless every one diverged).

  ``make_loop(run_dir)`` gives each run's loop settings (its ``eval_every`` sets how often
  the validation split is scored; it is also scored at the end).
  """
  grid = [float(lr) for lr in lr_grid]
  if not grid or any(not lr > 0 for lr in grid) or len(set(grid)) != len(grid):
    raise ConfigError(f"the learning-rate grid must hold distinct values > 0, got {grid}")
  path = os.path.join(root, SELECTION_FILE)
  if tf.io.gfile.exists(path):
    done = io_utils.read_json(path)
    if list(done.get("grid", {})) == [f"{lr:g}" for lr in grid]:
      return Selection(**done)
  values, infos, steps = {}, {}, 0
  for lr in grid:
    run_dir = lr_dir(root, lr)
    loop = make_loop(run_dir)
    steps = loop.total_steps
    try:
      result = stages.run_supervised(train, supervised,
                                     dataclasses.replace(optimizer, base_lr=lr), augment,
                                     image_size, loop, runtime, validation=validation, log=log,
                                     selection_metric=metric)
    except TrainingError as e:
      # A learning rate too high for this arm (non-finite loss) loses the comparison
      # unless a checkpoint validated before it diverged.
      log(f"[select] lr {lr:g} diverged: {e}")
      result = None
    if result is not None and result.preempted:
      return None
    try:
      infos[lr] = _best_info(run_dir)
    except ConfigError:
      if result is not None:
        raise
      infos[lr] = {"metric": metric or "", "value": math.nan, "step": 0}
    values[lr] = float(infos[lr]["value"])
  lr = choose(values, grid)
  selection = Selection(lr_dir(root, lr), lr, str(infos[lr]["metric"]), values[lr],
                        int(infos[lr]["step"]), {f"{v:g}": values[v] for v in grid}, steps)
  io_utils.atomic_write_json(path, selection.to_dict())
  log(f"[select] {root}: lr {lr:g} (validation {selection.metric} "
      + ", ".join(f"{k}: {v:.3f}" for k, v in selection.grid.items()) + ")")
  return selection
