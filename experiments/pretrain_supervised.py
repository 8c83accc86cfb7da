r"""REMEDIS stage 1: BiT-style supervised upstream training of a backbone.

For users who do not start from published BiT weights (and for the demo, which trains
its own small backbone on the embedded natural-image stand-in for ImageNet). Multi-class
softmax (or multi-label sigmoid) training with SGD + warmup/cosine by default.

Example:

  python -m experiments.pretrain_supervised --train_source=folder \
    --train_folder=/data/imagenet/train --val_source=folder --val_folder=/data/imagenet/val \
    --variant=r50x1 --batch_size=1024 --train_epochs=90 --image_size=224 \
    --strategy=mirrored --run_dir=/runs/bit_upstream
"""

from absl import flags

from experiments import _cli, common_flags, data_flags

FLAGS = flags.FLAGS

common_flags.define_supervised_binary_flags(
    epochs=90, optimizer="sgd", learning_rate=0.1, lr_schedule="warmup_cosine",
    warmup_epochs=5, weight_decay=1e-4)


def main(argv):
  del argv
  train = data_flags.manifest_from_flags("train_")
  validation = data_flags.manifest_from_flags("val_", required=False)
  common_flags.run_supervised_from_flags(train, validation, stage="upstream")


if __name__ == "__main__":
  _cli.run_main(main)
