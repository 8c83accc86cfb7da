"""The end-to-end REMEDIS demo on the embedded synthetic multi-site benchmark.

generate data → stage 1 supervised upstream training (natural-image stand-in) → stage 2
contrastive pretraining on site A's unlabelled pool → fine-tune the baseline (from stage
1) and REMEDIS (from stage 2) on site A → evaluate ID (site A) and zero-shot OOD (sites B,
C), with calibration and Sex / age-band subgroup reports → data-efficiency sweep on site B
→ Markdown report with plots.

Every stage calls the same library functions as the binaries. All numbers in the report
are measured in this run.

The module is long because it is the demo's one script: the seven stages in order, with
the settings of each next to the call that uses them and the reasons for them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from remedis_tf import io_utils, synthetic
from remedis_tf.data import augment as augment_lib
from remedis_tf.data import pipeline, recipes
from remedis_tf.data.manifest import Manifest
from remedis_tf.eval import metrics, plots, resampling
from remedis_tf.eval.frozen import FrozenEvalConfig
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.data.label_fraction import holdout_split
from remedis_tf.runs import demo_findings, demo_report, frozen, parallel, selection, stages, sweep
from remedis_tf.runs import sweep_probe
from remedis_tf.runs import evaluate as evaluate_lib
from remedis_tf.train import finetune_plan
from remedis_tf.train.contrastive import ContrastiveConfig
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig

# Subgroup columns of the synthetic benchmark (per-patient look-alike demographics) that
# the evaluation reports per group.
DEMO_SUBGROUPS = ("Sex", "Age:50,65")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """Sizes and budgets of the demo.

  Attributes:
    out_dir: where data, runs and the report go.
    quick: tiny data, model and step counts (a smoke test that runs in ~2 minutes).
    variant: backbone variant for every stage.
    image_size: training/eval resolution in pixels.
    seed: seed of the data generator and of every stage.
    upstream_steps, contrastive_steps: optimizer steps of stages 1 and 2.
    finetune_steps, sweep_steps: ceilings of the epoch rule of the site-A fine-tunes and of
      the site-B sweep cells (docs/demo_protocol.md).
    finetune_epochs, sweep_epochs: epochs over the (subset of the) training set per
      fine-tune (``train/finetune_plan``'s ``epochs`` rule, BiT-HyperRule's shape).
    sweep_min_steps: floor of the sweep cells' epoch rule: the small backbone needs ~100
      steps to move at all (30 left the baseline's 5 % cell at chance; docs/demo_protocol.md).
    upstream_batch, contrastive_batch, finetune_batch: global batch sizes.
    lr_grid: base learning rates each fine-tuning arm chooses from on validation.
    probe_c_grid: inverse L2 strengths the sweep's linear-probe arm chooses from.
    site_b_val_fraction: patients of site B's labelled pool held out once as its
      validation split (the sweep's fractions are nested subsets of the rest).
    fractions: label fractions of site B's training set in the data-efficiency sweep.
    finetune_seeds: fine-tuning seeds of the site-A baseline-vs-REMEDIS comparison.
    sweep_seeds: seeds per sweep cell.
    num_bootstrap: bootstrap resamples for confidence intervals.
    precision: float32 or bfloat16.
    workers: fine-tunes trained side by side in worker processes (the site-A arms, the
      sweep's (model, fraction) groups; :mod:`remedis_tf.runs.parallel`): 0 = one per CPU
      core, at most 2; 1 = one at a time in this process. The numbers do not depend on it.
  """
  out_dir: str = "demo_output"
  quick: bool = False
  variant: str = "small"
  image_size: int = 64
  seed: int = 0
  upstream_steps: int = 300
  contrastive_steps: int = 600
  finetune_steps: int = 200
  sweep_steps: int = 150
  finetune_epochs: float = 10.0
  sweep_epochs: float = 10.0
  sweep_min_steps: int = 100
  upstream_batch: int = 64
  contrastive_batch: int = 64
  finetune_batch: int = 32
  lr_grid: Tuple[float, ...] = (0.05, 0.1)
  probe_c_grid: Tuple[float, ...] = (0.01, 0.1, 1.0)
  site_b_val_fraction: float = 0.2
  # Three fractions (about 5 %, 25 % and all of site B's ~470 training images): with the
  # learning-rate grid and three seeds every fraction costs 8 fine-tunes, and five did
  # not fit the demo's 15-minute budget on a 2-core CPU.
  fractions: Tuple[float, ...] = (0.05, 0.25, 1.0)
  finetune_seeds: Tuple[int, ...] = (0, 1, 2)
  sweep_seeds: Tuple[int, ...] = (0, 1, 2)
  num_bootstrap: int = 500
  precision: str = "float32"
  workers: int = 0

  @classmethod
  def quick_config(cls, out_dir: str, **overrides) -> "DemoConfig":
    """The ``--quick`` sizes: everything tiny, for tests (one learning rate, so the smoke
    run stays ~2 minutes; checkpoints are still chosen on validation, and the grid itself
    is tested in tests/runs/test_sweep.py)."""
    values = dict(out_dir=out_dir, quick=True, variant="tiny", image_size=32,
                  upstream_steps=6, contrastive_steps=6, finetune_steps=6, sweep_steps=8,
                  sweep_min_steps=4, lr_grid=(0.05,),
                  upstream_batch=16, contrastive_batch=16, finetune_batch=16,
                  fractions=(0.5, 1.0), finetune_seeds=(0, 1), sweep_seeds=(0,),
                  num_bootstrap=50)
    values.update(overrides)
    return cls(**values)


class _Timer:
  """Wall time per demo stage, for the report."""

  def __init__(self, log):
    self.log = log
    self.times: Dict[str, float] = {}

  def stage(self, name: str):
    timer = self

    class _Ctx:
      def __enter__(self):
        self.t0 = time.time()
        timer.log(f"\n=== {name} ===")

      def __exit__(self, *exc):
        timer.times[name] = time.time() - self.t0
        if exc[0] is None:
          timer.log(f"=== {name}: done in {timer.times[name]:.0f}s ===")

    return _Ctx()


def _loop(run_dir: str, steps: int, eval_every: int = 0) -> LoopConfig:
  return LoopConfig(run_dir=run_dir, total_steps=steps, steps_per_loop=min(10, steps),
                    checkpoint_every=max(steps // 2, 1), summary_every=min(10, steps),
                    log_every=max(min(50, steps // 4), 1), eval_every=eval_every)


def _finetune_configs(cfg: DemoConfig, num_train: int, epochs: float, min_steps: int,
                      max_steps: int) -> Tuple[SupervisedConfig, OptimizerConfig]:
  """The finished fine-tuning configs of ``num_train`` images from the one planner
  (``train/finetune_plan``: ``epochs`` rule within [min_steps, max_steps], BiT-HyperRule's
  shape: warmup, three ÷10 decays); SGD without lr scaling, whose base lr each arm
  chooses from ``cfg.lr_grid`` on validation."""
  batch = min(cfg.finetune_batch, num_train)
  sup = SupervisedConfig(variant=cfg.variant, global_batch_size=batch, train_mode="full",
                         seed=cfg.seed)
  plan = finetune_plan.plan_finetune(num_train, batch, "bit_hyperrule", steps_rule="epochs",
                                     train_epochs=epochs, min_steps=min_steps,
                                     max_steps=max_steps, mixup_alpha=0.0)
  # BiT's published lr (0.003 at batch 512) is for large BiT models fine-tuned for 500+
  # steps; the small demo backbone needs larger ones to move in ~200 steps, hence the
  # demo's grid (docs/demo_protocol.md).
  opt = plan.optimizer(OptimizerConfig(name="sgd", base_lr=cfg.lr_grid[0],
                                       lr_scaling="none", schedule="bit_hyperrule",
                                       weight_decay=0.0))
  return sup, opt


def _finetune_augment(size: int) -> augment_lib.AugmentConfig:
  # Geometry only (finetune_augment applies no colour/blur) and mild: on 64-px synthetic
  # radiographs with ~600 training images, 8%-area crops and 45° rotations erase the
  # findings (measured val AUC 0.62 vs 0.74 with these settings, 150 steps).
  return augment_lib.get_preset("cxr", image_size=size, crop_area_min=0.85,
                                rotation_degrees=0.0, flip_lr_prob=0.0)


def _contrastive_augment(size: int) -> augment_lib.AugmentConfig:
  # The cxr preset's colour jitter and flips, crops down to 60% of the area, and no
  # rotation, elastic warp or histogram equalisation: at 64 px those made two views of
  # one synthetic image no more alike than views of two different patients (the loss
  # stayed above chance; docs/stage2_study.md).
  return augment_lib.get_preset("cxr", image_size=size, crop_area_min=0.6,
                                rotation_degrees=0.0, elastic_prob=0.0, hist_eq_prob=0.0)


def _medical(data: Dict, split: str) -> Manifest:
  return recipes.chexpert(data["csv"][split], data["out_dir"],
                          label_columns=synthetic.FINDINGS if "unlabelled" not in split else (),
                          attribute_columns=synthetic.SUBGROUP_COLUMNS)


@dataclasses.dataclass(frozen=True)
class _ArmJob:
  """One arm of the site-A comparison: its seeds fine-tuned one after the other (the first
  chooses the learning rate from ``lr_grid`` on validation, the others reuse it)."""
  name: str
  init: str
  train: Manifest
  validation: Manifest
  supervised: SupervisedConfig
  optimizer: OptimizerConfig
  augment: augment_lib.AugmentConfig
  size: int
  lr_grid: Tuple[float, ...]
  seeds: Tuple[int, ...]
  out: str
  runtime: stages.RuntimeConfig


def _finetune_arm_job(job: _ArmJob):
  return _finetune_arm(job, parallel.worker_log(job.name))


def _finetune_arm(job: _ArmJob, log) -> Optional[Dict[int, selection.Selection]]:
  """``{seed: Selection}`` of one arm, or None when a signal stopped it."""
  eval_every = max(job.optimizer.total_steps // 2, 3)
  grid, chosen = job.lr_grid, {}
  for seed in job.seeds:
    if parallel.stop_requested():
      return None
    root = os.path.join(job.out, "runs", f"finetune_{job.name}" + (f"_s{seed}" if seed else ""))
    sel = selection.finetune_selected(
        job.train, job.validation,
        dataclasses.replace(job.supervised, init=job.init, seed=seed), job.optimizer,
        job.augment, job.size,
        lambda d: _loop(d, job.optimizer.total_steps, eval_every=eval_every),
        grid, root, job.runtime, log=log)
    if sel is None:
      return None
    grid = (sel.lr,)  # chosen on the first seed, reused by the others
    chosen[seed] = sel
  return chosen


class _Stopped(Exception):
  """A training run of the demo stopped on SIGTERM / SIGINT (its checkpoint is saved)."""


def _stop_if(preempted: bool, what: str) -> None:
  if preempted:
    raise _Stopped(f"stopped by a signal during {what}; finished work and the last "
                   "checkpoint are kept: run the same command to resume")


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> Optional[str]:
  """Runs the whole pipeline; returns the path of ``report.md``, or None when SIGTERM or
  SIGINT (Ctrl-C) stopped a training run (it saved a checkpoint; the next call resumes
  there, and later stages never start from half-trained models)."""
  try:
    return _run_demo(cfg, log)
  except _Stopped as e:
    log(f"[demo] {e}")
    return None


def _run_demo(cfg: DemoConfig, log: Callable[[str], None]) -> str:
  t_start = time.time()
  out = os.path.abspath(cfg.out_dir)
  io_utils.ensure_dir(out)
  timer = _Timer(log)
  runtime = stages.RuntimeConfig(precision=cfg.precision)
  size = cfg.image_size

  with timer.stage("1/7 generate the synthetic multi-site benchmark"):
    syn_cfg = (synthetic.SyntheticConfig.quick(seed=cfg.seed) if cfg.quick
               else synthetic.SyntheticConfig(seed=cfg.seed))
    data = synthetic.generate_benchmark(os.path.join(out, "data"), syn_cfg)
    natural_train = recipes.generic_csv(data["csv"]["natural/train"], data["out_dir"],
                                        class_column="Label")
    natural_test = recipes.generic_csv(data["csv"]["natural/test"], data["out_dir"],
                                       class_column="Label",
                                       class_names=natural_train.label_names)
    sets = {name: _medical(data, name) for name in data["csv"] if name.startswith("site_")}
    for name, m in sorted(sets.items()):
      log(f"  {name}: {len(m)} images")
    grid_png = os.path.join(out, "synthetic_examples.png")
    synthetic.render_example_grid(grid_png, syn_cfg)

  natural_aug = augment_lib.get_preset("generic", image_size=size)
  finetune_aug = _finetune_augment(size)
  with timer.stage("2/7 stage 1: supervised upstream training (BiT-style)"):
    upstream_dir = os.path.join(out, "runs", "stage1_upstream")
    steps = cfg.upstream_steps
    stage1 = stages.run_supervised(
        natural_train,
        SupervisedConfig(variant=cfg.variant, global_batch_size=cfg.upstream_batch,
                         seed=cfg.seed),
        OptimizerConfig(name="sgd", base_lr=0.1, lr_scaling="linear",
                        schedule="warmup_cosine", warmup_steps=max(steps // 10, 1),
                        total_steps=steps, weight_decay=1e-4),
        natural_aug, size, _loop(upstream_dir, steps, eval_every=steps),
        runtime, validation=natural_test, stage="upstream", log=log)
    _stop_if(stage1.preempted, "stage 1")

  with timer.stage("3/7 stage 2: contrastive pretraining on site A's unlabelled pool"):
    contrastive_dir = os.path.join(out, "runs", "stage2_contrastive")
    steps = cfg.contrastive_steps
    cxr_aug = _contrastive_augment(size)
    stage2 = stages.run_contrastive(
        sets["site_a/unlabelled"],
        # SimCLR pairs (two views of one image), as REMEDIS does for chest X-rays; MICLe
        # pairs of this benchmark (frontal vs lateral/re-positioned views) are less alike
        # than two different patients (docs/stage2_study.md).
        ContrastiveConfig(variant=cfg.variant, global_batch_size=cfg.contrastive_batch,
                          temperature=0.1, micle=False, init=upstream_dir, seed=cfg.seed),
        # REMEDIS' linear scaling with twice its base lr (0.6·B/256 = 0.15 at B=64): on this
        # data it gave a kNN AUC of 0.62 after 600 steps (0.54 for the stage-1 features),
        # while 0.3·B/256 was slower and √B scaling (0.6) drifted.
        OptimizerConfig(name="lars", base_lr=0.6, lr_scaling="linear",
                        schedule="warmup_cosine", warmup_steps=max(steps // 10, 1),
                        total_steps=steps, weight_decay=1e-6),
        cxr_aug, _loop(contrastive_dir, steps, eval_every=max(steps // 2, 1)), runtime,
        log=log, monitor=sets["site_a/valid"], knn_k=20)
    _stop_if(stage2.preempted, "stage 2")
    pairs_png = _augmentation_examples(sets["site_a/unlabelled"], cxr_aug, cfg.seed,
                                       os.path.join(out, "augmentation_pairs.png"))
    frozen_result = _frozen_features(upstream_dir, contrastive_dir, sets, size, cfg, out, log)

  models = {"baseline": upstream_dir, "remedis": contrastive_dir}
  finetune_dirs, seed_dirs, selections = {}, {}, {}
  with timer.stage("4/7 fine-tune baseline and REMEDIS on site A"):
    site_a = sets["site_a/train"]
    sup, opt = _finetune_configs(cfg, len(site_a), cfg.finetune_epochs, 1, cfg.finetune_steps)
    jobs = [_ArmJob(name, init, site_a, sets["site_a/valid"], sup, opt, finetune_aug, size,
                    cfg.lr_grid, tuple(cfg.finetune_seeds), out, runtime)
            for name, init in models.items()]
    workers = parallel.workers_for(cfg.workers, len(jobs))
    if workers > 1:
      arms = parallel.run_jobs(_finetune_arm_job, jobs, workers, log)
    else:
      arms = []
      for job in jobs:  # one at a time: an arm stopped by a signal stops the stage
        arms.append(_finetune_arm(job, log))
        if arms[-1] is None:
          break
    for job, arm in zip(jobs, arms):
      _stop_if(arm is None, f"the site-A fine-tune of {job.name}")
      for seed, sel in arm.items():
        selections[f"{job.name}_s{seed}"] = sel.to_dict()
        seed_dirs[(job.name, seed)] = sel.run_dir
      finetune_dirs[job.name] = seed_dirs[(job.name, cfg.finetune_seeds[0])]

  eval_sets = {"id_valid": sets["site_a/valid"], "id_site_a": sets["site_a/test"],
               "ood_site_b": sets["site_b/test"], "ood_site_c": sets["site_c/test"]}
  eval_results = {}
  with timer.stage("5/7 evaluate ID (site A) and zero-shot OOD (sites B, C)"):
    for name, run_dir in finetune_dirs.items():
      eval_dir = os.path.join(out, "eval", name)
      evaluate_lib.evaluate_model(run_dir, eval_sets, eval_dir,
                                  num_bootstrap=cfg.num_bootstrap, operating_point="youden",
                                  val_set="id_valid", seed=cfg.seed, log=log,
                                  subgroups=DEMO_SUBGROUPS)
      eval_results[name] = {set_name: io_utils.read_json(os.path.join(eval_dir, f"{set_name}.json"))
                            for set_name in eval_sets}
    seed_rows, seed_reps, seed_preds = _seed_comparison(seed_dirs, eval_sets, size, cfg, out)
    roc_pngs = _roc_plots({name: seed_preds[(name, cfg.finetune_seeds[0])]
                           for name in finetune_dirs}, out)

  with timer.stage("6/7 data-efficiency sweep on site B (fine-tune and linear-probe arms)"):
    # Site B's validation split: patients held out once (fixed across fractions and
    # seeds); the fractions are nested subsets of the other patients.
    b_train, b_val = holdout_split(sets["site_b/train"], cfg.site_b_val_fraction, cfg.seed)
    sup, opt = _finetune_configs(cfg, len(b_train), cfg.sweep_epochs, cfg.sweep_min_steps,
                                 cfg.sweep_steps)
    template = sweep.FinetuneTemplate(supervised=sup, optimizer=opt, augment=finetune_aug,
                                      image_size=size, steps_rule="epochs",
                                      train_epochs=cfg.sweep_epochs,
                                      min_steps=cfg.sweep_min_steps, max_steps=cfg.sweep_steps,
                                      steps_per_loop=10, log_every=50)
    de = sweep.run_data_efficiency(
        b_train, sets["site_b/test"], models, cfg.fractions, cfg.sweep_seeds,
        template, os.path.join(out, "data_efficiency"), runtime=runtime,
        num_bootstrap=cfg.num_bootstrap, bootstrap_seed=cfg.seed, log=log,
        validation=b_val, lr_grid=cfg.lr_grid, lr_seed_sharing=True, workers=cfg.workers)
    _stop_if(de.interrupted, "the site-B sweep")
    probe = sweep_probe.probe_sweep(
        models, b_train, b_val, sets["site_b/test"], cfg.fractions, cfg.sweep_seeds, size,
        os.path.join(out, "data_efficiency", "probe"), c_grid=cfg.probe_c_grid,
        num_bootstrap=cfg.num_bootstrap, bootstrap_seed=cfg.seed, log=log)

  with timer.stage("7/7 write findings.json and the report"):
    found = demo_findings.write(cfg, out, frozen_result, seed_reps, de, probe, selections,
                                {"fractions of": b_train, "validation": b_val})
    path = demo_report.write_report(
        cfg, out, data, sets, stage1, stage2, eval_results, de, timer, grid_png, pairs_png,
        roc_pngs, time.time() - t_start, findings=found,
        extra_sections=(demo_report.probe_section(probe, cfg),
                        demo_report.frozen_section(frozen_result),
                        demo_report.seeds_section(seed_rows, cfg)))
  log(f"\nDemo finished in {time.time() - t_start:.0f}s. Report: {path}")
  return path


def _augmentation_examples(manifest: Manifest, aug: augment_lib.AugmentConfig, seed: int,
                           out_png: str) -> str:
  """Eight two-view pairs from the real contrastive pipeline, side by side."""
  ds = pipeline.contrastive_dataset(manifest, augment=aug, global_batch_size=8, seed=seed,
                                    micle=False)
  batch = next(iter(ds))
  images = np.concatenate([batch["view1"].numpy(), batch["view2"].numpy()], axis=0)
  order = np.stack([np.arange(8), np.arange(8) + 8], axis=1).reshape(-1)
  return plots.save_image_grid(images[order], out_png, ncols=4,
                               titles=[f"{i // 2}{'ab'[i % 2]}" for i in range(16)])


def _roc_plots(preds_of: Dict[str, Dict[str, Any]], out: str) -> List[str]:
  """Micro-averaged ROC (all findings pooled) per model, one PNG per eval set, from the
  models' predictions ``{model: {set_name: Predictions}}``."""
  pngs = []
  for set_name in next(iter(preds_of.values())):
    curves = {}
    for name, by_set in preds_of.items():
      preds = by_set[set_name]
      valid = preds.mask > 0
      labels, scores = preds.labels[valid], preds.scores[valid]
      fpr, tpr, _ = metrics.roc_curve(labels, scores)
      curves[name] = (fpr, tpr, metrics.roc_auc(labels, scores))
    png = os.path.join(out, f"roc_{set_name}.png")
    plots.plot_roc_curves(curves, png, title=f"{set_name}: pooled ROC over findings")
    pngs.append(png)
  return pngs


# ------------------------------------------ frozen features and multi-seed fine-tuning


def _frozen_features(stage1_dir: str, stage2_dir: str, sets: Dict[str, Manifest], size: int,
                     cfg: DemoConfig, out: str, log) -> Dict:
  """Linear probe + kNN on frozen stage-1 vs stage-2 features: probe fit on site A's
  labelled train split, scored on site A's test split (patient bootstrap CIs)."""
  result = frozen.compare_models(
      {"stage1": stage1_dir, "stage2": stage2_dir}, sets["site_a/train"], sets["site_a/test"],
      size, FrozenEvalConfig(num_bootstrap=cfg.num_bootstrap, seed=cfg.seed), log=log)
  io_utils.atomic_write_json(os.path.join(out, "eval", "frozen_features.json"), result)
  return result


def _seed_comparison(seed_dirs: Dict[Tuple[str, int], str], eval_sets: Dict[str, Manifest],
                     size: int, cfg: DemoConfig, out: str
                     ) -> Tuple[Dict[str, List], Dict, Dict[Tuple[str, int], Dict[str, Any]]]:
  """Per eval set: mean, per-seed values and the seed × test-patient interval of each model
  (:mod:`remedis_tf.eval.resampling`), the replicates behind them (paired findings), and
  every model's predictions ``{(model, seed): {set_name: Predictions}}``."""
  rows, reps_of = {}, {}
  preds_of: Dict[Tuple[str, int], Dict[str, Any]] = {key: {} for key in seed_dirs}
  tasks = {key: stages.load_classifier(d) for key, d in seed_dirs.items()}
  for set_name, manifest in eval_sets.items():
    if not set_name.startswith(("id_site", "ood_")):
      continue
    scores, preds = {}, None
    for (model, seed), (task, run_config) in tasks.items():
      _, preds = stages.evaluate_task(task, manifest, size,
                                      crop_fraction=stages.eval_crop_fraction(run_config))
      scores[(model, 1.0, seed)] = preds.scores
      preds_of[(model, seed)][set_name] = preds
    reps = resampling.replicates(scores, preds.labels, preds.mask, preds.patients,
                                 manifest.task, cfg.num_bootstrap, cfg.seed)
    rows[set_name] = resampling.combined_rows(reps)
    reps_of[set_name] = reps
  io_utils.atomic_write_json(os.path.join(out, "eval", "finetune_seeds.json"), {
      name: [dataclasses.asdict(r) for r in set_rows] for name, set_rows in rows.items()})
  return rows, reps_of, preds_of
