"""absl flags shared by the training binaries, and their translation into library configs.

Each ``define_*`` registers a group of flags; the matching ``*_from_flags`` builds the
frozen config the library takes. Flags that are config fields are declared once, in the
field → flag tables below (:mod:`experiments.config_flags`): the same table defines the
flags, builds the config and names the flag in the config's validation errors.
Augmentation flags are generated from ``AugmentConfig``'s fields (help text from its
docstring) so every knob is a flag.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

from absl import flags

from experiments import data_flags
from experiments.config_flags import ConfigFlags, Flag, define_field_flag
from remedis_tf.configs import field_docs
from remedis_tf.data import augment as augment_lib
from remedis_tf.errors import ConfigError
from remedis_tf.optim import factory, schedules
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import stages
from remedis_tf.runs.stages import RuntimeConfig
from remedis_tf.train import finetune_plan
from remedis_tf.train import strategy as strategy_lib
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig

FLAGS = flags.FLAGS
AUG_PREFIX = "aug_"

RUNTIME = ConfigFlags(RuntimeConfig, {
    "strategy": Flag(choices=strategy_lib.STRATEGIES, help=(
        "Distribution: default (one device), mirrored (all local GPUs, or "
        "--num_cpu_devices logical CPUs), multi_worker (TF_CONFIG), tpu (--tpu).")),
    "tpu": Flag(help="TPU to use with --strategy=tpu: 'local' on a TPU VM, or a TPU name / "
                "grpc:// address."),
    "num_cpu_devices": Flag(help="With --strategy=mirrored and no GPU: split the CPU into "
                            "this many logical devices (to exercise multi-replica code)."),
    "precision": Flag(choices=strategy_lib.PRECISIONS, help=(
        "Compute precision: float32, bfloat16 (mixed_bfloat16, TPU/modern CPU) or float16 "
        "(mixed_float16 with loss scaling, GPU). Norm stats and losses stay float32.")),
})

# total_steps is computed (--train_steps or --train_epochs); eval_every is defined with
# the supervised flags (the contrastive binary sets it with --monitor_every).
LOOP = ConfigFlags(LoopConfig, {
    "run_dir": Flag(help="Run directory (local or gs://): checkpoints, TensorBoard "
                    "summaries, config.json. Re-running the same command resumes from its "
                    "latest checkpoint."),
    "steps_per_loop": Flag(help="Steps per tf.function call (host loop); TPUs want 100s. "
                           "Checkpoints/summaries happen on call boundaries."),
    "checkpoint_every": Flag(help="Save a checkpoint every N steps (and at the end, and on "
                             "SIGTERM)."),
    "keep_checkpoints": Flag(),
    "summary_every": Flag(help="Write TensorBoard scalars every N steps; 0 = scale with "
                          "the run: min(50, max(1, total steps // 20)), so a short run still "
                          "gets about 20 points."),
    "log_every": Flag(help="Print a progress line (loss, images/s, ETA) every N steps. "
                      "Both rates leave out the first host-loop call (tracing, start-up)."),
    "eval_every": Flag(help="Evaluate on the validation set every N steps and keep the best "
                       "checkpoint in run_dir/best (0 = only at the end)."),
    "xla": Flag(help="Compile the per-replica train step with XLA (jit_compile). Off by "
                "default: slower on CPU; TPUs compile anyway."),
    "lock_timeout_s": Flag(help="gs:// run directories: a run-directory lock whose holder's "
                           "heartbeat is older than this many seconds is stale and taken "
                           "over (local disks use an OS lock that dies with its process)."),
    "steal_lock": Flag(help="Take over the run directory's lock even though its holder looks "
                       "alive (gs:// only; use when that process is known to be gone, e.g. "
                       "its VM was deleted)."),
})

# warmup_steps, total_steps and boundaries are computed (see optimizer_from_flags).
OPTIMIZER = ConfigFlags(OptimizerConfig, {
    "name": Flag("optimizer", choices=factory.OPTIMIZERS),
    "base_lr": Flag("learning_rate"),
    "lr_scaling": Flag(choices=schedules.LR_SCALINGS),
    "schedule": Flag("lr_schedule", choices=factory.SCHEDULES),
    "weight_decay": Flag(help="{doc} Norm parameters and biases are never decayed."),
    "weight_decay_mode": Flag(choices=factory.WEIGHT_DECAY_MODES),
    "momentum": Flag(),
    "trust_coefficient": Flag(help="LARS trust coefficient eta (0.001 in SimCLR and "
                              "REMEDIS)."),
    "nesterov": Flag(),
})

#: Fields of both training stages' configs (SupervisedConfig and ContrastiveConfig), with
#: the same flags; defined by define_model_flags / define_projection_flags.
MODEL_FIELDS = {
    "variant": Flag(help="Backbone: r50x1, r50x3, r101x1, r101x3, r152x2, r152x4 (BiT), "
                    "r26x1, or the CPU-sized 'small' / 'tiny' (same structure, fewer units "
                    "and channels)."),
    "init": Flag(help="Initial weights for a fresh run: a BiT .npz file, a timm "
                 "resnetv2_*_bit state dict (.safetensors; .pth needs torch), a Keras preset "
                 "folder (backbone or classifier preset; a classifier preset also gives the "
                 "projection head when fine-tuning from a projection layer), a SavedModel "
                 "directory / gs:// path / TF Hub handle, or one of our checkpoints (prefix, "
                 "checkpoints/ dir or run dir). Empty = random. Ignored when --run_dir "
                 "already has a checkpoint (resume wins)."),
    "seed": Flag(help="Seed for data order, augmentation and initialisation."),
    "projection_layers": Flag(help="Projection head depth n (REMEDIS code: 2; SimCLR-v2: "
                              "3)."),
    "projection_dim": Flag(help="Projection output dimension."),
    "projection_hidden_dim": Flag(help="Projection hidden width (0 = backbone output "
                                  "width)."),
}

# mixup_alpha is planned (-1 on the command line = BiT-HyperRule's value).
SUPERVISED = ConfigFlags(SupervisedConfig, {
    **MODEL_FIELDS,
    "global_batch_size": Flag("batch_size", help="Global batch size (all replicas "
                              "together)."),
    "train_mode": Flag(help="full (end to end), linear (frozen backbone: linear "
                       "evaluation), or freeze:N (root and blocks 1..N frozen)."),
    "from_projection_layer": Flag(help="0 = classify backbone features; k = classify "
                                  "projection layer k's output (REMEDIS fine-tunes from "
                                  "layer 0 or 1; needs --init from a contrastive run)."),
    "mixup_alpha": Flag(help="MixUp alpha; -1 = BiT-HyperRule (0.1 for >= 20k examples, "
                        "else 0)."),
})


def define_runtime_flags() -> None:
  """--strategy, --tpu, --num_cpu_devices, --precision."""
  RUNTIME.define()


def runtime_from_flags() -> RuntimeConfig:
  return RUNTIME.build()


def define_loop_flags(default_epochs: float) -> None:
  """--run_dir, --train_steps/--train_epochs and the loop cadences."""
  LOOP.define("run_dir", "steps_per_loop", "checkpoint_every", "keep_checkpoints",
              "summary_every", "log_every", "xla", "lock_timeout_s", "steal_lock",
              defaults={"steps_per_loop": 10}, required=("run_dir",))
  flags.DEFINE_integer("train_steps", 0, "Optimizer steps to train for; 0 = derive from "
                       "--train_epochs.")
  flags.DEFINE_float("train_epochs", default_epochs, "Epochs over the training set (used "
                     "when --train_steps is 0).")


def total_steps_from_flags(num_examples: int, global_batch_size: int) -> int:
  """--train_steps, or --train_epochs converted to steps."""
  if FLAGS.train_steps < 0:
    raise ConfigError(f"--train_steps must be >= 0, got {FLAGS.train_steps}")
  if FLAGS.train_steps:
    return FLAGS.train_steps
  if FLAGS.train_epochs <= 0:
    raise ConfigError(f"--train_epochs must be > 0 when --train_steps=0, got "
                      f"{FLAGS.train_epochs}")
  return finetune_plan.steps_for_epochs(FLAGS.train_epochs, num_examples, global_batch_size)


def loop_from_flags(total_steps: int, eval_every: int = 0,
                    table: ConfigFlags = LOOP) -> LoopConfig:
  """The LoopConfig of the loop flags; ``eval_every`` as the caller resolved it (``table``
  says which flag it came from, for error messages)."""
  return table.build(total_steps=total_steps, eval_every=eval_every)


def define_optimizer_flags(name: str, base_lr: float, lr_scaling: str, schedule: str,
                           warmup_epochs: float, weight_decay: float) -> None:
  """Optimizer and schedule flags with a stage's defaults."""
  OPTIMIZER.define(defaults={"name": name, "base_lr": base_lr, "lr_scaling": lr_scaling,
                             "schedule": schedule, "weight_decay": weight_decay})
  flags.DEFINE_float("warmup_epochs", warmup_epochs, "Linear warmup length in epochs (used "
                     "when --warmup_steps is negative).")
  flags.DEFINE_integer("warmup_steps", -1, "Linear warmup length in steps; -1 = from "
                       "--warmup_epochs.")


def optimizer_from_flags(total_steps: int, steps_per_epoch: float,
                         boundaries=()) -> OptimizerConfig:
  """The OptimizerConfig of the optimizer flags for a ``total_steps`` run, the warmup by
  ``finetune_plan.plan_warmup`` (``boundaries``: the planned bit_hyperrule steps)."""
  if FLAGS.lr_schedule == "constant" and (FLAGS.warmup_steps > 0 or (
      FLAGS["warmup_epochs"].present and FLAGS.warmup_epochs > 0)):
    raise ConfigError("--lr_schedule=constant has no warmup: drop --warmup_steps/"
                      "--warmup_epochs or use --lr_schedule=warmup_cosine")
  warmup = finetune_plan.plan_warmup(FLAGS.lr_schedule, total_steps, steps_per_epoch,
                                     warmup_steps=FLAGS.warmup_steps,
                                     warmup_epochs=FLAGS.warmup_epochs)
  return OPTIMIZER.build(warmup_steps=warmup, total_steps=total_steps,
                         boundaries=tuple(boundaries))


def define_augment_flags(default_preset: str) -> None:
  """--aug_preset plus one --aug_<field> override per AugmentConfig field."""
  flags.DEFINE_string("aug_preset", default_preset,
                      f"Augmentation preset: one of {', '.join(sorted(augment_lib.PRESETS))} "
                      "(see docs/augmentations.md); every value can be overridden by the "
                      f"--{AUG_PREFIX}* flags.")
  docs = field_docs(augment_lib.AugmentConfig)
  for field in dataclasses.fields(augment_lib.AugmentConfig):
    if field.name == "image_size":
      continue
    name = AUG_PREFIX + field.name
    define_field_flag(field, name, None,
                      f"{docs.get(field.name, field.name)} (unset = the preset's value)")


# AugmentConfig's fields as the binaries' flags, for its validation errors: image_size is
# --image_size (the training resolution), every other field --aug_<field>.
AUGMENT = ConfigFlags(augment_lib.AugmentConfig, {
    f.name: Flag("image_size" if f.name == "image_size" else AUG_PREFIX + f.name)
    for f in dataclasses.fields(augment_lib.AugmentConfig)})


def augment_from_flags(image_size: int) -> augment_lib.AugmentConfig:
  """The preset named by --aug_preset with every --aug_* flag that was set applied; a
  ConfigError names the flag (``--image_size=-32: …``, ``--aug_blur_prob=2.0: …``)."""
  overrides: Dict[str, object] = {"image_size": image_size}
  for field in dataclasses.fields(augment_lib.AugmentConfig):
    name = AUG_PREFIX + field.name
    if name in FLAGS and FLAGS[name].value is not None:
      overrides[field.name] = FLAGS[name].value
  with AUGMENT.flag_errors():
    return augment_lib.get_preset(FLAGS.aug_preset, **overrides)


def define_variant_flag(default_variant: str) -> None:
  """--variant alone (binaries whose inits come from elsewhere, e.g. the data-efficiency
  sweep's --models)."""
  SUPERVISED.define("variant", defaults={"variant": default_variant})


def define_model_flags(default_variant: str) -> None:
  """--variant, --init and --seed."""
  SUPERVISED.define("variant", "init", "seed", defaults={"variant": default_variant})


def define_projection_flags() -> None:
  """Projection head shape (must match between pretraining and fine-tuning)."""
  SUPERVISED.define("projection_layers", "projection_dim", "projection_hidden_dim")


def define_training_flags(*, epochs: float, optimizer: str, learning_rate: float,
                          lr_schedule: str, warmup_epochs: float, weight_decay: float,
                          variant: str = "r50x1", aug_preset: str = "generic") -> None:
  """The flags of every training stage with that stage's defaults: model (--variant,
  --init, --seed), projection head, runtime, loop, optimizer (linear lr scaling) and
  augmentation."""
  define_model_flags(variant)
  define_projection_flags()
  define_runtime_flags()
  define_loop_flags(default_epochs=epochs)
  define_optimizer_flags(optimizer, learning_rate, "linear", lr_schedule,
                         warmup_epochs=warmup_epochs, weight_decay=weight_decay)
  define_augment_flags(aug_preset)


def print_result(result, run_dir: str) -> None:
  """Final summary lines of a training binary."""
  if result.preempted:
    print(f"[stopped] preempted at step {result.final_step}; checkpoint "
          f"{result.checkpoint_path}. Run the same command again to resume.")
    return
  shown = " ".join(f"{k} {v:.4f}" for k, v in result.last_metrics.items() if k != "step")
  print(f"[finished] step {result.final_step} {shown}")
  print(f"[finished] checkpoint {result.checkpoint_path}; TensorBoard: "
        f"tensorboard --logdir {run_dir}")
  for line in data_flags.SKIPPED:
    print(line)


def define_supervised_flags(default_mode: str = "full") -> None:
  """Flags of the supervised stages (upstream training and fine-tuning)."""
  SUPERVISED.define("global_batch_size", "train_mode", "from_projection_layer", "mixup_alpha",
                    defaults={"train_mode": default_mode, "mixup_alpha": -1.0})
  LOOP.define("eval_every")
  flags.DEFINE_integer("image_size", 0, "Training/eval resolution; 0 = BiT-HyperRule's "
                       "rule (128 for images under 96x96, else 480).")
  flags.DEFINE_float("hyperrule_step_scale", 1.0, "Multiply BiT-HyperRule's step schedule "
                     "by this (e.g. 0.1 for quick experiments); used when --train_steps=0 "
                     "and --lr_schedule=bit_hyperrule.")
  flags.DEFINE_integer("eval_batch_size", 64, "Batch size for validation passes.")
  flags.DEFINE_integer("image_min_side", 0, "Typical image side of the dataset, for the "
                       "HyperRule resolution rule (0 = read it from the first image).")


def define_supervised_binary_flags(**training_defaults) -> None:
  """All flags of a supervised training binary (pretrain_supervised, finetune): the
  --train_* and --val_* data, :func:`define_training_flags` with ``training_defaults``,
  and :func:`define_supervised_flags`."""
  data_flags.define_data_flags("train_")
  data_flags.define_data_flags("val_")
  define_training_flags(**training_defaults)
  define_supervised_flags("full")


def supervised_plan(num_examples: int, first_image_side: int) -> Dict[str, object]:
  """Resolves steps, resolution, MixUp and schedule boundaries from flags + HyperRule
  (``finetune_plan.plan_finetune``); ``first_image_side`` 0 = no resolution rule."""
  hyperrule = FLAGS.lr_schedule == "bit_hyperrule"
  if FLAGS.train_steps < 0:
    raise ConfigError(f"--train_steps must be >= 0, got {FLAGS.train_steps}")
  total = 0
  if FLAGS.train_steps or not hyperrule:
    total = total_steps_from_flags(num_examples, FLAGS.batch_size)
    if hyperrule and total < 5:
      raise ConfigError(f"--train_steps={total} is too short for --lr_schedule=bit_hyperrule "
                        "(needs >= 5 steps: warmup, 3 decays, end); train longer or use "
                        "--lr_schedule=warmup_cosine/constant")
  plan = finetune_plan.plan_finetune(
      num_examples, FLAGS.batch_size, FLAGS.lr_schedule,
      steps_rule="fixed" if total else "hyperrule", total_steps=total,
      step_scale=FLAGS.hyperrule_step_scale, mixup_alpha=FLAGS.mixup_alpha,
      image_side=first_image_side)
  return {
      "total_steps": plan.total_steps,
      "boundaries": plan.boundaries,
      "image_size": FLAGS.image_size or plan.image_size,
      "mixup_alpha": plan.mixup_alpha,
  }


def image_side_from_flags(manifest) -> int:
  """--image_min_side, else the manifest's typical image side (header read; TFRecord
  shards too) when --image_size=0 needs the HyperRule resolution rule; else 0."""
  if FLAGS.image_min_side < 0:
    raise ConfigError(f"--image_min_side must be >= 0, got {FLAGS.image_min_side}")
  if FLAGS.image_min_side:
    return FLAGS.image_min_side
  if FLAGS.image_size and len(manifest):
    return 0
  return finetune_plan.typical_image_side(manifest)  # also names an empty set


def run_supervised_from_flags(train, validation, stage: str):
  """Builds the supervised configs from flags and runs ``stages.run_supervised``."""
  plan = supervised_plan(len(train), image_side_from_flags(train))
  config = SUPERVISED.build(mixup_alpha=plan["mixup_alpha"])
  optimizer = optimizer_from_flags(plan["total_steps"], len(train) / FLAGS.batch_size,
                                   boundaries=plan["boundaries"])
  result = stages.run_supervised(
      train, config, optimizer, augment_from_flags(plan["image_size"]), plan["image_size"],
      loop_from_flags(plan["total_steps"], FLAGS.eval_every), runtime_from_flags(),
      validation=validation, eval_batch_size=FLAGS.eval_batch_size, stage=stage)
  print_result(result, FLAGS.run_dir)
  return result
