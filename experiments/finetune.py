r"""REMEDIS stage 3 (and the supervised baseline): fine-tune a classifier.

Initialise from published BiT weights (the supervised baseline), a contrastive run
(REMEDIS), a REMEDIS / TF Hub SavedModel, or nothing; train end to end, as a linear
probe, or with blocks frozen; optionally on a nested, patient-level label fraction.
The best checkpoint on the validation set is kept in RUN_DIR/best.

Example (REMEDIS, 10% of CheXpert labels, U-Ones):

  python -m experiments.finetune --train_source=chexpert \
    --train_csv=/data/CheXpert-v1.0/train.csv --train_data_root=/data \
    --train_uncertain_policy=ones --val_source=chexpert \
    --val_csv=/data/CheXpert-v1.0/valid.csv --val_data_root=/data \
    --init=/runs/cxr_stage2 --variant=r50x1 --label_fraction=0.1 --eval_every=500 \
    --run_dir=/runs/cxr_finetune_remedis_10pct
"""

from absl import flags

from experiments import _cli, common_flags, data_flags
from remedis_tf.data import label_fraction
from remedis_tf.errors import ConfigError

FLAGS = flags.FLAGS

common_flags.define_supervised_binary_flags(
    epochs=10, optimizer="sgd", learning_rate=0.003, lr_schedule="bit_hyperrule",
    warmup_epochs=0, weight_decay=0.0)
flags.DEFINE_float("label_fraction", 1.0, "Train on this fraction of the labelled data: a "
                   "seeded, label-stratified, patient-level subset; subsets are nested "
                   "(the 1% subset is inside the 5% subset) for one --fraction_seed.")
flags.DEFINE_integer("examples_per_class", 0, "Alternative to --label_fraction: this many "
                     "positive examples per class (0 = use --label_fraction).")
flags.DEFINE_integer("fraction_seed", 0, "Seed of the label-fraction subset.")


def main(argv):
  del argv
  if FLAGS.examples_per_class and FLAGS["label_fraction"].present:
    raise ConfigError("--label_fraction and --examples_per_class are alternatives; set only "
                      "one")
  if not 0.0 < FLAGS.label_fraction <= 1.0:
    raise ConfigError(f"--label_fraction must be in (0, 1], got {FLAGS.label_fraction}")
  if FLAGS.examples_per_class < 0:
    raise ConfigError(f"--examples_per_class must be >= 0, got {FLAGS.examples_per_class}")
  train = data_flags.manifest_from_flags("train_")
  if FLAGS.label_fraction != 1.0 or FLAGS.examples_per_class:
    train = label_fraction.select_fraction(
        train, fraction=None if FLAGS.examples_per_class else FLAGS.label_fraction,
        per_class=FLAGS.examples_per_class or None, seed=FLAGS.fraction_seed)
    print(f"[data] label subset: {len(train)} examples ({train.source})")
  validation = data_flags.manifest_from_flags("val_", required=False)
  common_flags.run_supervised_from_flags(train, validation, stage="finetune")

if __name__ == "__main__":
  _cli.run_main(main)
