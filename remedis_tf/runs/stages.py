"""The three REMEDIS stages as library calls (what the binaries and the demo run).

* :func:`run_contrastive` — stage 2 (SimCLR / MICLe).
* :func:`run_supervised` — stage 1 (BiT-style upstream) and stage 3 (fine-tuning), with
  model selection on a validation set (the best checkpoint is kept in ``run_dir/best``).
* :func:`load_classifier` — rebuilds a trained classifier from its run directory;
  :func:`eval_crop_fraction` — the evaluation centre crop it was trained with.
* :func:`evaluate_task` — predicts a manifest with a task's model and scores it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple

import tensorflow as tf

from remedis_tf import configs, io_utils, run_guard
from remedis_tf.data import augment as augment_lib
from remedis_tf.data import micle as micle_lib
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import CheckpointError, ConfigError
from remedis_tf.eval import calibration
from remedis_tf.eval import knn
from remedis_tf.eval import predict as predict_lib
from remedis_tf.eval import task_metrics
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.train import loop as loop_lib
from remedis_tf.train import strategy as strategy_lib
from remedis_tf.train.contrastive import ContrastiveConfig, ContrastiveTask
from remedis_tf.train.supervised import SupervisedConfig, SupervisedTask

BEST_SUBDIR = "best"
BEST_INFO = "best.json"
# How to find or skip an image that fails to decode mid-run (see run_guard.guarded_run).
DATA_HINT = ("find it with validate_manifest(check='decode') (binaries: --*validate=decode) "
             "or skip bad files (--*skip_bad_examples)")


def _log_learning_rate(optimizer: OptimizerConfig, global_batch_size: int,
                       log: Callable[[str], None]) -> Dict[str, Any]:
  """Prints the effective peak learning rate and schedule (and a warning when batch scaling
  made it tiny); returns them for ``config.json``."""
  summary = optimizer.schedule_summary(global_batch_size)
  log(f"[optimizer] {optimizer.name}: peak learning rate {summary['peak_learning_rate']:.3g} "
      f"({summary['scaling']}); schedule {summary['schedule']}")
  warning = optimizer.small_learning_rate_warning(global_batch_size)
  if warning:
    log(f"[optimizer] {warning}")
  return summary


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Where and how to compute.

  Attributes:
    strategy: default | mirrored | multi_worker | tpu.
    tpu: TPU name/address or "local" (strategy=tpu only).
    num_cpu_devices: logical CPU devices for ``mirrored`` on a GPU-less machine.
    precision: float32 | bfloat16 | float16 (mixed policies).
  """
  # Where a run computes may change when it resumes (e.g. restarted on another machine);
  # the precision may not (see remedis_tf.configs.resumable_fields).
  RESUMABLE_FIELDS: ClassVar[Tuple[str, ...]] = ("strategy", "num_cpu_devices", "tpu")

  strategy: str = "default"
  tpu: str = ""
  num_cpu_devices: int = 0
  precision: str = "float32"


def contrastive_epoch_size(manifest: Manifest, micle: bool) -> Tuple[int, str]:
  """What one epoch of the contrastive stream iterates: ``(count, "images")``, or with
  ``micle`` ``(count, "cases")``, since the MICLe stream is a permutation of cases (one
  pair of images per case, see ``data/micle.py``). Convert epochs to steps with this
  count (:func:`remedis_tf.train.finetune_plan.steps_for_epochs`), not the image count."""
  if micle and len(manifest):
    return len(micle_lib.case_table(manifest)[1]), "cases"
  return len(manifest), "images"


def _setup(runtime: RuntimeConfig) -> Tuple[tf.distribute.Strategy, str]:
  policy = strategy_lib.set_precision(runtime.precision)
  strategy = strategy_lib.make_strategy(runtime.strategy, runtime.tpu or None,
                                        runtime.num_cpu_devices)
  return strategy, policy


def run_contrastive(manifest: Manifest, config: ContrastiveConfig,
                    optimizer: OptimizerConfig, augment: augment_lib.AugmentConfig,
                    loop: loop_lib.LoopConfig, runtime: RuntimeConfig = RuntimeConfig(),
                    log: Callable[[str], None] = print, monitor: Optional[Manifest] = None,
                    knn_k: int = 20, **loop_kwargs) -> loop_lib.LoopResult:
  """Stage 2: contrastive pretraining of ``config.variant`` on ``manifest`` (labels unused
  except by the optional online linear probe).

  With ``monitor`` (a labelled held-out set), a leave-one-patient-out kNN monitor on the
  frozen pooled features runs every ``loop.eval_every`` steps and at the end
  (``eval/knn_mean_auc`` or ``eval/knn_top1_accuracy`` in TensorBoard)."""
  strategy, policy = _setup(runtime)
  num_items, what = contrastive_epoch_size(manifest, config.micle)
  per_epoch = f" (MICLe: an epoch is {num_items} cases)" if what == "cases" else ""
  log(f"[contrastive] {len(manifest)} images from {manifest.source}{per_epoch}; "
      f"{strategy.num_replicas_in_sync} replica(s); precision {policy}")
  run_guard.check_batch(config.global_batch_size, strategy.num_replicas_in_sync, num_items,
                        manifest.source, what)
  task = ContrastiveTask(config, optimizer, augment, manifest, policy)
  run_config = {"stage": "contrastive", "contrastive": config, "optimizer": optimizer,
                "augment": augment, "loop": loop, "runtime": runtime,
                "data": {"source": manifest.source, "num_examples": len(manifest)},
                "learning_rate": _log_learning_rate(optimizer, config.global_batch_size, log)}
  eval_hook = None
  if monitor is not None:
    if monitor.task == "unlabelled":
      raise ConfigError(f"the kNN monitor needs labels; {monitor.source} is unlabelled")

    def eval_hook(step: int) -> Dict[str, float]:
      del step
      preds = predict_lib.predict(task.embedding_fn(), monitor, augment.image_size,
                                  crop_fraction=augment.eval_crop_fraction,
                                  keep=("embedding",))
      return knn.knn_monitor_metrics(monitor.task, preds.embeddings, preds.labels,
                                     preds.mask, preds.patients, k=knn_k)
  with run_guard.guarded_run(loop.run_dir, manifest.source, DATA_HINT):
    return loop_lib.run_loop(task, strategy, loop, run_config, log=log, eval_hook=eval_hook,
                             **loop_kwargs)


def eval_crop_fraction(run_config: Mapping[str, Any]) -> float:
  """The evaluation centre crop of a run: ``eval_crop_fraction`` of the augment section
  of its ``config.json`` (:class:`remedis_tf.data.augment.AugmentConfig`), or
  ``EVAL_CROP_FRACTION`` for a run trained without augmentation (``"augment": null``)."""
  augment = run_config.get("augment") or {}
  return float(augment.get("eval_crop_fraction", augment_lib.EVAL_CROP_FRACTION))


def evaluate_task(task: SupervisedTask, manifest: Manifest, image_size: int,
                  batch_size: int = 64, num_bootstrap: int = 0, seed: int = 0,
                  operating_point=None, keep_scores: bool = False,
                  crop_fraction: float = augment_lib.EVAL_CROP_FRACTION):
  """Predicts ``manifest`` with ``task``'s model and computes the task metrics.

  ``crop_fraction`` is the evaluation centre crop; pass the run's own (its
  ``AugmentConfig.eval_crop_fraction``, :func:`eval_crop_fraction` of a run config).
  Returns ``(result dict, Predictions)`` (predictions with scores and raw logits).
  """
  preds = predict_lib.predict(task.inference_fn(), manifest, image_size,
                              batch_size=batch_size, crop_fraction=crop_fraction,
                              keep=("scores", "logits"))
  kwargs = {}
  if operating_point is not None:
    kwargs["operating_point"] = operating_point
  result = task_metrics.evaluate_predictions(
      manifest.task, preds.labels, preds.scores, preds.mask,
      patients=preds.patients if any(preds.patients) else None,
      label_names=list(manifest.label_names), num_bootstrap=num_bootstrap, seed=seed,
      logits=preds.logits, **kwargs)
  return result, preds


def run_supervised(train: Manifest, config: SupervisedConfig, optimizer: OptimizerConfig,
                   augment: Optional[augment_lib.AugmentConfig], image_size: int,
                   loop: loop_lib.LoopConfig, runtime: RuntimeConfig = RuntimeConfig(),
                   validation: Optional[Manifest] = None, eval_batch_size: int = 64,
                   stage: str = "finetune", log: Callable[[str], None] = print,
                   selection_metric: Optional[str] = None,
                   **loop_kwargs) -> loop_lib.LoopResult:
  """Stage 1 or 3: supervised training; with ``validation``, the checkpoint with the best
  validation metric is kept in ``run_dir/best`` (``best.json`` records step and value),
  with calibration temperatures fitted on the same validation predictions
  (``best/temperature.json``, see :mod:`remedis_tf.eval.calibration`). The validation set
  is predicted with the run's evaluation crop (``augment.eval_crop_fraction``;
  ``EVAL_CROP_FRACTION`` without augmentation), as every later evaluation of the run is.
  ``selection_metric`` is the metric the best checkpoint maximises (a name of
  :func:`remedis_tf.eval.task_metrics.evaluate_predictions`, e.g. ``top3_accuracy`` where
  top-3 is reported); default: the task's own metric (mean AUC, or top-1 accuracy).
  """
  strategy, policy = _setup(runtime)
  log(f"[{stage}] {len(train)} training images from {train.source} ({train.task}, "
      f"{train.num_labels} outputs); {strategy.num_replicas_in_sync} replica(s); "
      f"precision {policy}; mode {config.train_mode}")
  run_guard.check_batch(config.global_batch_size, strategy.num_replicas_in_sync, len(train),
                        train.source)
  task = SupervisedTask(config, optimizer, augment, image_size, train, policy)
  run_config = {"stage": stage, "supervised": config, "optimizer": optimizer,
                "augment": augment, "image_size": image_size, "loop": loop,
                "runtime": runtime,
                "data": {"source": train.source, "num_examples": len(train),
                         "task": train.task, "label_names": list(train.label_names)},
                "learning_rate": _log_learning_rate(optimizer, config.global_batch_size, log)}
  eval_hook = None
  if validation is not None:
    crop = augment.eval_crop_fraction if augment is not None else augment_lib.EVAL_CROP_FRACTION
    eval_hook = _model_selection_hook(task, validation, image_size, eval_batch_size,
                                      loop.run_dir, strategy, crop, selection_metric, log)
  try:
    with run_guard.guarded_run(loop.run_dir, train.source, DATA_HINT):
      return loop_lib.run_loop(task, strategy, loop, run_config, log=log, eval_hook=eval_hook,
                               **loop_kwargs)
  finally:
    scratch = os.path.join(loop.run_dir, f".best_worker{strategy_lib.worker_id(strategy)}_tmp")
    if not strategy_lib.is_chief(strategy) and tf.io.gfile.exists(scratch):
      tf.io.gfile.rmtree(scratch)


def _model_selection_hook(task: SupervisedTask, validation: Manifest, image_size: int,
                          batch_size: int, run_dir: str, strategy, crop_fraction: float,
                          metric: Optional[str] = None, log: Callable[[str], None] = print):
  best_dir = os.path.join(run_dir, BEST_SUBDIR)
  info_path = os.path.join(best_dir, BEST_INFO)
  state = {"manager": None, "warned": set()}

  def hook(step: int) -> Dict[str, float]:
    result, preds = evaluate_task(task, validation, image_size, batch_size,
                                  crop_fraction=crop_fraction)
    name, ci = task_metrics.main_metric(result, metric or task_metrics.SELECTION_METRICS)
    value = float(ci["value"])
    best = io_utils.read_json(info_path) if tf.io.gfile.exists(info_path) else None
    improved = best is None or (math.isfinite(value) and
                                (not math.isfinite(best["value"]) or value > best["value"]))
    if improved:
      if state["manager"] is None:
        checkpoint = tf.train.Checkpoint(**task.modules())
        directory = best_dir if strategy_lib.is_chief(strategy) else os.path.join(
            run_dir, f".best_worker{strategy_lib.worker_id(strategy)}_tmp")
        state["manager"] = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)
      path = state["manager"].save(checkpoint_number=step)
      if strategy_lib.is_chief(strategy):
        schema = task.manifest
        fit = calibration.fit_temperature(schema.task, preds.logits, preds.labels,
                                          preds.mask, schema.label_names)
        for line in calibration.fallback_warnings(fit):
          if line not in state["warned"]:  # once per run, not at every new best step
            state["warned"].add(line)
            log(f"[calibration] WARNING: {line} (recorded in {BEST_SUBDIR}/"
                f"{calibration.TEMPERATURE_FILE})")
        calibration.write_temperature(best_dir, calibration.temperature_record(
            schema.task, schema.label_names, fit, validation.source))
        io_utils.atomic_write_json(info_path, {"step": step, "metric": name, "value": value,
                                               "checkpoint": path})
    return {f"val_{name}": value}

  return hook


def load_classifier(run_dir: str, which: str = "best") -> Tuple[SupervisedTask, Dict]:
  """Rebuilds a trained classifier from a supervised run directory.

  Args:
    run_dir: a ``run_supervised`` run directory (has ``config.json``).
    which: ``best`` (model-selection checkpoint, falling back to latest when the run had no
      validation set) or ``latest``.
  Returns:
    ``(task, run_config)``; use ``task.forward`` / ``evaluate_task`` (with
    ``crop_fraction=eval_crop_fraction(run_config)``). When the best
    checkpoint is restored, ``task.temperature`` holds its calibration record (if any).
  """
  run_config = configs.read_run_config(run_dir)
  if "supervised" not in run_config:
    raise CheckpointError(f"{run_dir} is not a supervised run (stage "
                          f"{run_config.get('stage')!r}); evaluate a fine-tuning run")
  sup = configs.from_dict(SupervisedConfig, run_config["supervised"])
  sup = dataclasses.replace(sup, init="")
  opt = configs.from_dict(OptimizerConfig, run_config["optimizer"])
  data = run_config["data"]
  schema = Manifest(records=(), label_names=tuple(data["label_names"]), task=data["task"],
                    source=f"schema of {run_dir}")
  precision = run_config.get("runtime", {}).get("precision", "float32")
  policy = strategy_lib.set_precision(precision)
  task = SupervisedTask(sup, opt, None, int(run_config["image_size"]), schema, policy)
  task.build(tf.distribute.get_strategy())
  path = None
  if which == "best":
    path = tf.train.latest_checkpoint(os.path.join(run_dir, BEST_SUBDIR))
  if path is None:
    path = tf.train.latest_checkpoint(os.path.join(run_dir, loop_lib.CHECKPOINT_SUBDIR))
  if path is None:
    raise CheckpointError(f"no checkpoint found in {run_dir}")
  tf.train.Checkpoint(**task.modules()).restore(path).expect_partial(
      ).assert_existing_objects_matched()
  best_dir = os.path.join(run_dir, BEST_SUBDIR)
  if os.path.normpath(os.path.dirname(path)) == os.path.normpath(best_dir):
    # Temperatures belong to the model-selection checkpoint they were fitted for.
    task.temperature = calibration.read_temperature(best_dir)
  return task, {**run_config, "restored_checkpoint": path}
