"""The data-efficiency experiment: fine-tune each model on nested label fractions × seeds.

For every (model, fraction, seed) cell not yet in the result store:

1. select the nested, patient-level, stratified subset
   ``select_fraction(train, fraction, seed=seed)`` (fraction 1.0 = all of ``train``);
2. fine-tune ``models[model]`` (an init string: BiT ``.npz``, contrastive run, SavedModel,
   or "" for random) with the template's settings into ``out_dir/runs/<model>/f<f>_s<seed>``
   — the global batch is ``min(template batch, subset size)`` so tiny subsets work, and
   the step count follows the template's :attr:`FinetuneTemplate.steps_rule`;
3. evaluate on ``test`` (patient-level bootstrap CI) and record the main metric, its CI,
   ``n_train`` and the run's settings in ``out_dir/results.json``. With a ``validation``
   split (patient-disjoint from train and test, fixed for every cell), each cell trains
   once per learning rate of ``lr_grid`` into ``<cell>/lr<lr>``, keeps each run's best
   checkpoint on validation, and is scored with the best checkpoint of the learning rate
   that validates best (:mod:`remedis_tf.runs.selection`; the grid, the choice and the
   validation scores are recorded per cell). Without one, the final weights are scored.

Finished cells are never recomputed, so re-running the same call resumes the sweep; a
cell interrupted mid-training resumes from its run directory's latest checkpoint (the
training loop's auto-resume). At the end the results are aggregated over seeds
(mean over seeds), the headline fraction is computed (the smallest fraction at which
the candidate model's mean reaches the reference model's mean at 100 %), and
``table.csv``, ``table.md``, ``headline.json``, ``findings.json`` (paired differences,
:mod:`remedis_tf.runs.sweep_summary`) and ``data_efficiency.png`` are written.
Each cell also keeps its test scores (``test_predictions.npz``); when every cell has them
and all (model, fraction) share the seeds, the table's intervals (and the plot's bands)
are the two-level bootstrap of :mod:`remedis_tf.eval.resampling` over test patients and
seeds, and ``headline.json`` carries the headline's interval (the whole rule re-run on
every replicate); otherwise they fall back to the Student-t interval over seeds.

With ``workers > 1`` the (model, fraction) groups of cells run side by side in worker
processes (:mod:`remedis_tf.runs.parallel`), each group's seeds in order; the result store
takes the cells of every worker (under a file lock).

The module is long because one cell's whole recipe (subset, plan, learning-rate selection,
test scoring, result record) reads in one place, the same in this process and in a worker.

``out_dir/sweep.json`` records what the results are comparable under (train/test sets,
template, bootstrap settings, model inits); a later call with a different setup is
refused instead of mixing incomparable cells. New models, fractions or seeds may be added.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from remedis_tf import configs, io_utils, remote_io
from remedis_tf.data import augment as augment_lib
from remedis_tf.data.label_alignment import align_labels
from remedis_tf.data.label_fraction import select_fraction
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError
from remedis_tf.eval import data_efficiency as de
from remedis_tf.eval import predict as predict_lib
from remedis_tf.eval import task_metrics
from remedis_tf.eval.result_store import ResultStore
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import parallel, selection, stages
from remedis_tf.runs.sweep_summary import (PREDICTIONS_FILE, SweepResult, _summarise,
                                           combined_from_store)
from remedis_tf.train import finetune_plan
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig

__all__ = ["FinetuneTemplate", "CellPlan", "SweepResult", "plan_cell", "cell_dir",
           "run_data_efficiency", "combined_from_store", "PREDICTIONS_FILE", "RESULTS_FILE"]
RESULTS_FILE = "results.json"
SWEEP_FILE = "sweep.json"
STEPS_RULES = finetune_plan.STEPS_RULES


@dataclasses.dataclass(frozen=True)
class FinetuneTemplate:
  """How every cell is fine-tuned (per-cell init, seed, batch and steps are filled in).

  Attributes:
    supervised: variant, batch size (an upper bound per cell), train mode, projection
      layer, MixUp; its ``init`` and ``seed`` are replaced per cell.
    optimizer: optimizer and schedule; ``total_steps``/``warmup_steps``/``boundaries`` are
      recomputed per cell by ``steps_rule``.
    augment: training augmentation (None = none).
    image_size: training and evaluation resolution.
    steps_rule: ``fixed`` (``optimizer.total_steps`` for every cell), ``epochs``
      (``ceil(train_epochs · n / batch)``), or ``hyperrule`` (BiT-HyperRule's schedule for
      the subset size ``n``, times ``hyperrule_step_scale``).
    train_epochs: epochs per cell for ``epochs``.
    hyperrule_step_scale: shrinks the HyperRule schedule (1.0 = published).
    warmup_epochs: warmup length in epochs of the cell's subset (``fixed``/``epochs``
      rules; capped below the cell's total steps); ignored by ``hyperrule``, whose first
      boundary is the warmup.
    warmup_steps: if >= 0, a warmup of this many steps instead of ``warmup_epochs``.
    hyperrule_mixup: MixUp α from BiT-HyperRule for the cell's subset size (0.1 for
      ≥ 20k images, else 0) instead of ``supervised.mixup_alpha``.
    min_steps, max_steps: floor and ceiling of the ``epochs`` rule (``max_steps`` 0 = none).
    evals_per_run: with a validation set, how many times each run scores it (evenly
      spaced, the last at the end) to keep its best checkpoint.
    steps_per_loop, checkpoint_every, log_every: training-loop cadences.
    eval_batch_size: batch size of the test-set pass.
  """
  supervised: SupervisedConfig
  optimizer: OptimizerConfig
  augment: Optional[augment_lib.AugmentConfig]
  image_size: int
  steps_rule: str = "fixed"
  train_epochs: float = 10.0
  hyperrule_step_scale: float = 1.0
  warmup_epochs: float = 0.0
  warmup_steps: int = -1
  hyperrule_mixup: bool = False
  min_steps: int = 1
  max_steps: int = 0
  evals_per_run: int = 2
  steps_per_loop: int = 10
  checkpoint_every: int = 500
  log_every: int = 50
  eval_batch_size: int = 64

  def __post_init__(self):
    if self.steps_rule not in STEPS_RULES:
      raise ConfigError(f"steps_rule must be one of {STEPS_RULES}, got {self.steps_rule!r}")
    if self.steps_rule == "epochs" and not self.train_epochs > 0:
      raise ConfigError(f"train_epochs must be > 0 for steps_rule=epochs, got "
                        f"{self.train_epochs}")
    if self.steps_rule == "hyperrule" and self.optimizer.schedule != "bit_hyperrule":
      raise ConfigError("steps_rule=hyperrule needs the bit_hyperrule learning-rate schedule, "
                        f"not {self.optimizer.schedule}")
    if not self.hyperrule_step_scale > 0:
      raise ConfigError(f"hyperrule_step_scale must be > 0, got {self.hyperrule_step_scale}")
    if self.image_size < 32:
      raise ConfigError(f"image_size must be >= 32, got {self.image_size}")


@dataclasses.dataclass(frozen=True)
class CellPlan:
  """The resolved fine-tuning settings of one cell."""
  supervised: SupervisedConfig
  optimizer: OptimizerConfig
  total_steps: int


def plan_cell(template: FinetuneTemplate, init: str, seed: int, num_train: int) -> CellPlan:
  """Per-cell batch (``min(template batch, n)``), steps, schedule and MixUp
  (:func:`remedis_tf.train.finetune_plan.plan_finetune`)."""
  if num_train < 1:
    raise ConfigError("a data-efficiency cell has no training examples")
  batch = min(template.supervised.global_batch_size, num_train)
  opt = template.optimizer
  plan = finetune_plan.plan_finetune(
      num_train, batch, opt.schedule, steps_rule=template.steps_rule,
      total_steps=opt.total_steps, train_epochs=template.train_epochs,
      step_scale=template.hyperrule_step_scale, warmup_steps=template.warmup_steps,
      warmup_epochs=template.warmup_epochs, min_steps=template.min_steps,
      max_steps=template.max_steps,
      mixup_alpha=-1.0 if template.hyperrule_mixup else template.supervised.mixup_alpha)
  opt = plan.optimizer(opt)
  sup = dataclasses.replace(template.supervised, init=init, seed=int(seed),
                            global_batch_size=batch, mixup_alpha=plan.mixup_alpha)
  return CellPlan(sup, opt, plan.total_steps)


def cell_dir(out_dir: str, model: str, fraction: float, seed: int) -> str:
  """``out_dir/runs/<model>/f<fraction>_s<seed>`` (fraction printed with ``%g``)."""
  return os.path.join(out_dir, "runs", model, f"f{fraction:g}_s{seed}")


def _check_names(models: Mapping[str, str]) -> None:
  if not models:
    raise ConfigError("no models given (e.g. baseline=BiT-M-R50x1.npz,remedis=/runs/stage2)")
  for name in models:
    if not name or not all(c.isalnum() or c in "_-." for c in name):
      raise ConfigError(f"model name {name!r}: use letters, digits, '_', '-', '.'")


def _check_grid(fractions: Sequence[float], seeds: Sequence[int]) -> None:
  if not fractions:
    raise ConfigError("no label fractions given")
  for f in fractions:
    if not 0.0 < float(f) <= 1.0:
      raise ConfigError(f"label fraction {f} is not in (0, 1]")
  if not seeds:
    raise ConfigError("no seeds given")


def _manifest_fingerprint(m: Manifest) -> Dict[str, Any]:
  return {"source": m.source, "num_examples": len(m), "task": m.task,
          "label_names": list(m.label_names),
          "first_id": m.records[0].example_id if m.records else "",
          "last_id": m.records[-1].example_id if m.records else ""}


def _template_fingerprint(template: FinetuneTemplate) -> Dict[str, Any]:
  d = configs.to_dict(template)
  for key in ("steps_per_loop", "checkpoint_every", "log_every", "eval_batch_size"):
    d.pop(key, None)
  d["supervised"].pop("init", None)
  d["supervised"].pop("seed", None)
  return d


def _check_sweep(out_dir: str, setup: Dict[str, Any], models: Mapping[str, str]) -> None:
  """Refuses a setup that differs from the one ``out_dir``'s results were made with."""
  path = os.path.join(out_dir, SWEEP_FILE)
  setup = configs.jsonable(setup)
  if tf.io.gfile.exists(path):
    old = io_utils.read_json(path)
    # Adding a model is fine; changing the init of one already swept is not.
    recorded_models = old.get("models", {})
    diffs = configs.config_differences(
        {**old, "models": {n: recorded_models[n] for n in models if n in recorded_models}},
        {**setup, "models": {n: setup["models"][n] for n in models if n in recorded_models}})
    if diffs:
      raise ConfigError(f"{out_dir} holds results of a different sweep setup "
                        f"({configs.format_differences(diffs)}); use a new output "
                        "directory or the original settings")
    setup["models"] = {**old.get("models", {}), **setup["models"]}
  io_utils.atomic_write_json(path, setup)



@dataclasses.dataclass(frozen=True)
class _SweepContext:
  """What every cell of one sweep call shares (picklable: it travels to worker processes)."""
  train: Manifest
  test: Manifest
  validation: Optional[Manifest]
  models: Dict[str, str]
  template: FinetuneTemplate
  out_dir: str
  runtime: Any
  num_bootstrap: int
  bootstrap_seed: int
  metric: Optional[str]
  grid: Tuple[float, ...]
  lr_seed_sharing: bool
  seeds: Tuple[int, ...]
  num_cells: int


@dataclasses.dataclass(frozen=True)
class _CellsJob:
  """Cells run one after the other (one (model, fraction) of the sweep), with their
  1-based numbers in the sweep."""
  context: _SweepContext
  cells: Tuple[Tuple[int, de.Cell], ...]


def _tag(i: int, n: int, cell: de.Cell) -> str:
  return f"[sweep {i}/{n}] {cell.model} fraction {cell.fraction:g} seed {cell.seed}"


def _run_cells_job(job: _CellsJob) -> Tuple[List[de.Cell], bool]:
  """:func:`_run_cells` in a worker process (lines go to its stdout)."""
  first = job.cells[0][1]
  return _run_cells(job, parallel.worker_log(f"{first.model} f{first.fraction:g}"))


def _run_cells(job: _CellsJob, log: Callable[[str], None]) -> Tuple[List[de.Cell], bool]:
  """Trains, selects and scores the job's cells in order, adding each finished one to the
  result store; returns (finished cells, stopped by a signal)."""
  c = job.context
  store = ResultStore(os.path.join(c.out_dir, RESULTS_FILE))
  computed: List[de.Cell] = []
  for i, cell in job.cells:
    tag = _tag(i, c.num_cells, cell)
    if parallel.stop_requested():
      log(f"{tag}: not started (stop requested); run the same sweep again to resume")
      return computed, True
    subset = c.train if cell.fraction >= 1.0 else select_fraction(
        c.train, cell.fraction, seed=cell.seed)
    plan = plan_cell(c.template, c.models[cell.model], cell.seed, len(subset))
    run_dir = cell_dir(c.out_dir, cell.model, cell.fraction, cell.seed)
    log(f"{tag}: {len(subset)} images, batch {plan.supervised.global_batch_size}, "
        f"{plan.total_steps} steps -> {run_dir}")
    evals = max(c.template.evals_per_run, 1) if c.validation is not None else 0

    def make_loop(directory: str, total: int = plan.total_steps, evals: int = evals):
      return LoopConfig(run_dir=directory, total_steps=total,
                        steps_per_loop=min(c.template.steps_per_loop, total),
                        checkpoint_every=c.template.checkpoint_every,
                        log_every=c.template.log_every, summary_every=c.template.log_every,
                        eval_every=max(-(-total // evals), 1) if evals else 0)

    chosen: Dict[str, Any] = {}
    if c.validation is None:
      result = stages.run_supervised(subset, plan.supervised, plan.optimizer,
                                     c.template.augment, c.template.image_size,
                                     make_loop(run_dir), c.runtime, log=log)
      preempted, scored_dir, which = result.preempted, run_dir, "latest"
    else:
      # The lr is chosen on the first seed of each (model, fraction) and reused by its
      # other seeds (each still keeps its best checkpoint on validation).
      first = store.get(de.Cell(cell.model, cell.fraction, c.seeds[0])) or {}
      cell_grid = ([first["lr"]] if c.lr_seed_sharing and cell.seed != c.seeds[0]
                   and "lr" in first else list(c.grid))
      sel = selection.finetune_selected(
          subset, c.validation, plan.supervised, plan.optimizer, c.template.augment,
          c.template.image_size, make_loop, cell_grid, run_dir, c.runtime, c.metric, log)
      preempted, scored_dir, which = sel is None, sel and sel.run_dir, "best"
      if sel is not None:
        chosen = {"selection": "validation", "lr": sel.lr, "lr_grid": list(c.grid),
                  "lr_chosen_on_seed": c.seeds[0] if len(cell_grid) < len(c.grid)
                  else cell.seed, "val_metric": sel.metric, "val_value": sel.value,
                  "val_step": sel.step, "val_grid": sel.grid}
    if preempted:
      log(f"{tag}: preempted; run the same sweep again to resume")
      return computed, True
    task, run_config = stages.load_classifier(scored_dir, which=which)
    evaluated, preds = stages.evaluate_task(task, c.test, c.template.image_size,
                                            batch_size=c.template.eval_batch_size,
                                            num_bootstrap=c.num_bootstrap,
                                            seed=c.bootstrap_seed,
                                            crop_fraction=stages.eval_crop_fraction(run_config))
    name, ci = task_metrics.main_metric(evaluated, c.metric)
    task_metrics.write_metrics(evaluated, os.path.join(run_dir, "test_metrics.json"),
                               os.path.join(run_dir, "test_metrics.csv"))
    predict_lib.save_predictions(os.path.join(run_dir, PREDICTIONS_FILE), preds, c.test.task)
    store.add(cell, {"metric": ci, "metric_name": name, "n_train": len(subset),
                     "n_train_patients": len({r for r in subset.patients()}),
                     "global_batch_size": plan.supervised.global_batch_size,
                     "total_steps": plan.total_steps, "run_dir": run_dir,
                     "init": c.models[cell.model], "metrics": evaluated["metrics"], **chosen})
    computed.append(cell)
    log(f"{tag}: test {name} {ci.get('value')}"
        + (f" (lr {chosen['lr']:g}, validation {chosen['val_value']:.3f})" if chosen else ""))
  return computed, False


def run_data_efficiency(train: Manifest, test: Manifest, models: Mapping[str, str],
                        fractions: Sequence[float], seeds: Sequence[int],
                        template: FinetuneTemplate, out_dir: str, runtime=None,
                        num_bootstrap: int = 1000, metric: Optional[str] = None,
                        reference_model: str = "baseline", candidate_model: str = "remedis",
                        reference_fraction: float = 1.0, bootstrap_seed: int = 0,
                        log: Callable[[str], None] = print,
                        validation: Optional[Manifest] = None,
                        lr_grid: Sequence[float] = (),
                        lr_seed_sharing: bool = False, workers: int = 1) -> SweepResult:
  """Runs (or resumes) the data-efficiency sweep and writes its table, headline, plot and
  ``findings.json``.

  Args:
    train: labelled training set of the new site (fractions are taken from it).
    test: labelled test set every cell is evaluated on.
    models: ``{name: init}``, e.g. ``{"baseline": "BiT-M-R50x1.npz", "remedis":
      "/runs/cxr_stage2"}``.
    fractions: label fractions in (0, 1], e.g. ``(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)``.
    seeds: subset/training seeds, e.g. ``(0, 1, 2)``.
    template: fine-tuning settings shared by all cells.
    out_dir: output folder (results, runs, table, plot).
    runtime: :class:`remedis_tf.runs.stages.RuntimeConfig` (default: one device, float32).
    num_bootstrap: patient-level bootstrap resamples of each cell's test metric.
    metric: metric to tabulate and select on (default mean AUC; top-1 accuracy for
      multi-class; e.g. ``top3_accuracy`` for dermatology).
    reference_model, candidate_model, reference_fraction: the headline comparison.
    bootstrap_seed: seed of the test-set bootstrap.
    log: progress lines.
    validation: a labelled split of the new site, patient-disjoint from ``train`` and
      ``test`` and the same for every cell; with it each cell keeps its best checkpoint on
      it and chooses its learning rate from ``lr_grid``
      (:func:`remedis_tf.runs.selection.finetune_selected`). Without it each cell is
      scored on its final weights.
    lr_grid: base learning rates tried per cell (default: the template's ``base_lr``).
    lr_seed_sharing: choose the lr on the first seed of each (model, fraction) only and
      reuse it for the other seeds (a cheaper grid; checkpoints are still chosen per cell).
    workers: (model, fraction) groups trained side by side in worker processes
      (:mod:`remedis_tf.runs.parallel`; each group's cells stay in order); 1 = all in this
      process, 0 = one per core, at most 2. The results do not depend on it.
  """
  runtime = runtime or stages.RuntimeConfig()
  _check_names(models)
  _check_grid(fractions, seeds)
  if len(test) == 0:
    raise ConfigError(f"the test set {test.source} is empty")
  align_labels(test, train.label_names, train.task, "test")
  grid = [float(lr) for lr in (lr_grid or (template.optimizer.base_lr,))]
  setup = {"format": "remedis_tf.data_efficiency", "version": 1,
           "train": _manifest_fingerprint(train), "test": _manifest_fingerprint(test),
           "template": _template_fingerprint(template), "num_bootstrap": int(num_bootstrap),
           "bootstrap_seed": int(bootstrap_seed), "metric": metric or "",
           "models": dict(models)}
  if validation is not None:
    align_labels(validation, train.label_names, train.task, "validation")
    setup.update(validation=_manifest_fingerprint(validation), lr_grid=grid)
  _check_sweep(out_dir, setup, models)
  store = ResultStore(os.path.join(out_dir, RESULTS_FILE))
  cells = [de.Cell(m, float(f), int(s)) for m in models for f in sorted(fractions)
           for s in seeds]
  skipped: List[de.Cell] = []
  pending: Dict[tuple, List[Tuple[int, de.Cell]]] = {}
  for i, cell in enumerate(cells, start=1):
    if store.has(cell):
      log(f"{_tag(i, len(cells), cell)}: already done, skipping")
      skipped.append(cell)
    else:
      # One job per (model, fraction): its first seed chooses the lr its other seeds reuse.
      pending.setdefault((cell.model, cell.fraction), []).append((i, cell))
  context = _SweepContext(train, test, validation, dict(models), template, out_dir, runtime,
                          int(num_bootstrap), int(bootstrap_seed), metric, tuple(grid),
                          bool(lr_seed_sharing), tuple(int(s) for s in seeds), len(cells))
  workers = parallel.workers_for(workers, len(pending))
  if workers > 1 and remote_io.is_remote(out_dir):
    log(f"[sweep] {out_dir} is not a local folder: cells run one at a time")
    workers = 1
  jobs = [_CellsJob(context, tuple(group)) for group in pending.values()]
  if workers > 1:
    outcomes = parallel.run_jobs(_run_cells_job, jobs, workers, log)
  else:
    outcomes = []
    for job in jobs:
      outcomes.append(_run_cells(job, log))
      if outcomes[-1][1]:
        break
  computed = [cell for done, _ in outcomes for cell in done]
  interrupted = any(stopped for _, stopped in outcomes)
  store = ResultStore(store.path)  # the cells the workers added
  protocol = {"selection": "validation" if validation is not None else "final weights",
              "lr_grid": grid, "lr_chosen_per": ("model and fraction, on the first seed"
                                                 if lr_seed_sharing else "cell"), "seeds": [int(s) for s in seeds],
              "fractions": [float(f) for f in sorted(fractions)],
              "step_rule": template.steps_rule, "train_epochs": template.train_epochs,
              "min_steps": template.min_steps, "max_steps": template.max_steps,
              "validation": validation.source if validation is not None else None,
              "test": test.source, "num_bootstrap": int(num_bootstrap)}
  return _summarise(store, out_dir, computed, skipped, metric, reference_model,
                    candidate_model, reference_fraction, interrupted, log,
                    num_bootstrap=num_bootstrap, bootstrap_seed=bootstrap_seed,
                    protocol=protocol)
