r"""Data-efficient generalisation: fine-tune each model on nested label fractions × seeds.

For every (model, fraction, seed) the nested, patient-level, stratified subset of the
--train_* data is fine-tuned (same recipe for every model; the global batch shrinks to the
subset size when needed) and evaluated on the --test_* data. Results accumulate in
OUTPUT_DIR/results.json; re-running the command skips finished cells and resumes an
interrupted one from its checkpoint. Outputs: table.csv, table.md (mean over seeds with a
95% interval from a bootstrap over test patients and seeds), headline.json (smallest
fraction at which "remedis" reaches "baseline" trained on 100%, with the interval of the
whole rule over the same bootstrap), data_efficiency.png, and
runs/<model>/f<fraction>_s<seed>/ (each with test_predictions.npz).

Example (MIMIC-CXR as the new site; CheXpert-pretrained baseline and REMEDIS):

  python -m experiments.data_efficiency \
    --train_source=mimic --train_data_root=/data/mimic-cxr-jpg --train_mimic_split=train \
    --test_source=mimic --test_data_root=/data/mimic-cxr-jpg --test_mimic_split=test \
    --models=baseline=/weights/BiT-M-R50x1.npz,remedis=/runs/cxr_stage2 \
    --fractions=0.01,0.02,0.05,0.1,0.2,0.5,1.0 --seeds=0,1,2 \
    --variant=r50x1 --image_size=224 --batch_size=512 --output_dir=/runs/cxr_data_efficiency

Steps per cell: --train_steps (fixed) if > 0; else BiT-HyperRule's schedule for the
subset size with --lr_schedule=bit_hyperrule (scaled by --hyperrule_step_scale); else
--train_epochs over the subset.
"""

from __future__ import annotations

from absl import flags

from experiments import _cli, common_flags, data_flags
from remedis_tf.data.manifest import describe
from remedis_tf.errors import ConfigError
from remedis_tf.eval import resampling
from remedis_tf.runs import sweep
from remedis_tf.train import finetune_plan

FLAGS = flags.FLAGS

data_flags.define_data_flags("train_", role="training (new site)")
data_flags.define_data_flags("test_", role="test")
flags.DEFINE_list("models", None, "Models to compare as NAME=INIT pairs, e.g. "
                  "baseline=/weights/BiT-M-R50x1.npz,remedis=/runs/cxr_stage2. INIT is any "
                  "fine-tuning init (BiT .npz, contrastive run dir, SavedModel, checkpoint; "
                  "empty = random). The headline compares the two names given by "
                  "--reference_model and --candidate_model.", required=True)
flags.DEFINE_list("fractions", ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0"],
                  "Label fractions in (0, 1] of the training set (nested subsets).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: each selects a different nested subset "
                  "family and training seed.")
flags.DEFINE_string("output_dir", None, "Sweep directory (local or gs://): results.json, "
                    "runs/, table, headline and plot. Re-running resumes.", required=True)
flags.DEFINE_integer("num_bootstrap", 1000, "Bootstrap resamples (patient level) of each "
                     "cell's test metric.")
flags.DEFINE_string("metric", None, "Metric to tabulate (default mean_auc; top1_accuracy for "
                    "multi-class; e.g. top3_accuracy for dermatology).")
flags.DEFINE_string("reference_model", "baseline", "Model whose 100%-label result is the "
                    "target of the headline.")
flags.DEFINE_string("candidate_model", "remedis", "Model whose smallest fraction reaching the "
                    "target is the headline.")
flags.DEFINE_integer("train_steps", 0, "Optimizer steps for every cell; 0 = by rule (see "
                     "--lr_schedule / --train_epochs).")
flags.DEFINE_float("train_epochs", 10, "Epochs over each cell's subset when --train_steps=0 "
                   "and the schedule is not bit_hyperrule.")
flags.DEFINE_integer("steps_per_loop", 10, "Steps per tf.function call (host loop).")
flags.DEFINE_integer("checkpoint_every", 500, "Checkpoint every N steps within a cell.")
flags.DEFINE_integer("log_every", 50, "Progress line every N steps.")
flags.DEFINE_integer("workers", 1, "Cells trained side by side, each (model, fraction) group "
                     "in its own worker process with its own TensorFlow (~1.5 GB each); its "
                     "seeds run in order. 1 = one cell at a time in this process (the default: "
                     "on a GPU one process should own the device); 0 = one per CPU core, at "
                     "most 2. Pays on small CPU machines, where one small fine-tune leaves "
                     "cores idle (benchmarks/README.md, 'Parallel fine-tunes'). The numbers "
                     "do not depend on it.")
common_flags.define_variant_flag("r50x1")
common_flags.define_projection_flags()
common_flags.define_runtime_flags()
common_flags.define_optimizer_flags("sgd", 0.003, "linear", "bit_hyperrule",
                                    warmup_epochs=0, weight_decay=0.0)
common_flags.define_augment_flags("generic")
common_flags.define_supervised_flags("full")


def parse_models(items):
  """``["name=init", ...]`` → ordered ``{name: init}`` (ConfigError if malformed)."""
  models = {}
  for item in items or ():
    name, sep, init = item.partition("=")
    if not sep or not name.strip():
      raise ConfigError(f"--models entry {item!r}: expected NAME=INIT")
    if name.strip() in models:
      raise ConfigError(f"--models: model {name.strip()!r} given twice")
    models[name.strip()] = init.strip()
  if not models:
    raise ConfigError("--models needs at least one NAME=INIT")
  return models


def _floats(name):
  try:
    return [float(v) for v in FLAGS[name].value]
  except ValueError as e:
    raise ConfigError(f"--{name}: {e}") from None


def _ints(name):
  try:
    return [int(v) for v in FLAGS[name].value]
  except ValueError as e:
    raise ConfigError(f"--{name}: {e}") from None


def template_from_flags(train) -> sweep.FinetuneTemplate:
  """The fine-tuning template shared by all cells."""
  if FLAGS.eval_every:
    raise ConfigError("--eval_every is not used by the sweep (each cell is evaluated on the "
                      "test set at its end)")
  image_size = FLAGS.image_size or finetune_plan.plan_resolution(
      common_flags.image_side_from_flags(train))
  if FLAGS.train_steps < 0:
    raise ConfigError(f"--train_steps must be >= 0, got {FLAGS.train_steps}")
  rule = finetune_plan.default_steps_rule(FLAGS.train_steps, FLAGS.lr_schedule)
  # No --init/--seed here: each cell's init is its --models entry, its seed a --seeds value.
  supervised = common_flags.SUPERVISED.build(mixup_alpha=max(FLAGS.mixup_alpha, 0.0))
  # The plan of the whole training set (what the 100 % cell gets); every cell's own plan
  # comes from the same planner for its subset size (sweep.plan_cell).
  plan = finetune_plan.plan_finetune(
      len(train), min(supervised.global_batch_size, max(len(train), 1)), FLAGS.lr_schedule,
      steps_rule=rule, total_steps=FLAGS.train_steps, train_epochs=FLAGS.train_epochs,
      step_scale=FLAGS.hyperrule_step_scale, warmup_steps=FLAGS.warmup_steps,
      warmup_epochs=FLAGS.warmup_epochs)
  optimizer = common_flags.OPTIMIZER.build(warmup_steps=plan.warmup_steps,
                                           total_steps=plan.total_steps,
                                           boundaries=plan.boundaries)
  return sweep.FinetuneTemplate(
      supervised=supervised, optimizer=optimizer,
      augment=common_flags.augment_from_flags(image_size), image_size=image_size,
      steps_rule=rule, train_epochs=FLAGS.train_epochs,
      hyperrule_step_scale=FLAGS.hyperrule_step_scale, warmup_epochs=FLAGS.warmup_epochs,
      warmup_steps=FLAGS.warmup_steps, hyperrule_mixup=FLAGS.mixup_alpha < 0,
      steps_per_loop=FLAGS.steps_per_loop, checkpoint_every=FLAGS.checkpoint_every,
      log_every=FLAGS.log_every, eval_batch_size=FLAGS.eval_batch_size)


def main(argv):
  del argv
  models = parse_models(FLAGS.models)
  train = data_flags.manifest_from_flags("train_")
  test = data_flags.manifest_from_flags("test_")
  print(f"[data] train: {describe(train)}")
  print(f"[data] test: {describe(test)}")
  result = sweep.run_data_efficiency(
      train, test, models, _floats("fractions"), _ints("seeds"), template_from_flags(train),
      FLAGS.output_dir, runtime=common_flags.runtime_from_flags(),
      num_bootstrap=FLAGS.num_bootstrap, metric=FLAGS.metric,
      reference_model=FLAGS.reference_model, candidate_model=FLAGS.candidate_model,
      workers=FLAGS.workers)
  print(f"[sweep] {len(result.computed)} cell(s) computed, {len(result.skipped)} already done")
  if result.interrupted:
    print("[sweep] interrupted: run the same command again to resume")
  elif result.headline_interval is not None:
    print(f"[headline] {resampling.format_headline(result.headline_interval)}")
  elif result.headline is not None:
    print(f"[headline] {result.headline.summary} (no interval: {result.interval_note})")
  else:
    print(f"[headline] not available: {result.headline_note}")


if __name__ == "__main__":
  _cli.run_main(main)
