r"""REMEDIS stage 2: contrastive (SimCLR / MICLe) pretraining on unlabelled images.

Example (BiT-M init, CheXpert images, 2 GPUs):

  python -m experiments.pretrain_contrastive --source=chexpert \
    --csv=/data/CheXpert-v1.0/train.csv --data_root=/data \
    --variant=r50x1 --init=/weights/BiT-M-R50x1.npz --aug_preset=cxr --image_size=224 \
    --batch_size=512 --train_epochs=100 --strategy=mirrored --run_dir=/runs/cxr_stage2

Re-running the same command resumes from the run directory's latest checkpoint.
"""

from absl import flags

from experiments import _cli, common_flags, data_flags
from experiments.config_flags import ConfigFlags, Flag
from remedis_tf.runs import stages
from remedis_tf.train.contrastive import ContrastiveConfig

FLAGS = flags.FLAGS

# The contrastive stage's fields; the model and projection ones are the shared flags.
CONTRASTIVE = ConfigFlags(ContrastiveConfig, {
    **common_flags.MODEL_FIELDS,
    "global_batch_size": Flag("batch_size", help="Global batch size (items per step over "
                              "all replicas: images, or cases with --micle; each gives two "
                              "views)."),
    "temperature": Flag(),
    "micle": Flag(help="MICLe: positive pairs from two different images of the same "
                  "patient/case (needs a patient column); single-image cases fall back to "
                  "two views of one image. The stream then iterates over cases, so "
                  "--train_epochs and --warmup_epochs count passes over the cases (steps "
                  "per epoch = cases / --batch_size), not over the images."),
    "linear_probe": Flag(help="Train an online linear probe (stop-gradient) when the data "
                         "has labels."),
    "init_projection": Flag(help="Also restore the projection head when --init is one of "
                            "our contrastive checkpoints."),
})
# LoopConfig.eval_every is this binary's kNN-monitor cadence.
LOOP = common_flags.LOOP.renamed(eval_every="monitor_every")

data_flags.define_data_flags("")
data_flags.define_data_flags("monitor_", role="kNN monitor (optional, labelled)")
common_flags.define_training_flags(epochs=100, optimizer="lars", learning_rate=0.3,
                                   lr_schedule="warmup_cosine", warmup_epochs=10,
                                   weight_decay=1e-6)
CONTRASTIVE.define("global_batch_size", "temperature", "micle", "linear_probe",
                   "init_projection")
flags.DEFINE_integer("image_size", 224, "Side of the square training views in pixels.")
flags.DEFINE_integer("monitor_every", 0, "Run the kNN monitor on the --monitor_* set every "
                     "N steps (0 = only at the end; needs --monitor_source).")
flags.DEFINE_integer("knn_k", 20, "Neighbours of the kNN monitor.")


def steps_and_optimizer(manifest):
  """``(total steps, OptimizerConfig)``: epochs (training and warmup) count what the
  stream iterates, i.e. cases with --micle and images otherwise."""
  num_items, _ = stages.contrastive_epoch_size(manifest, FLAGS.micle)
  total = common_flags.total_steps_from_flags(num_items, FLAGS.batch_size)
  return total, common_flags.optimizer_from_flags(total, num_items / FLAGS.batch_size)


def main(argv):
  del argv
  manifest = data_flags.manifest_from_flags("")
  monitor = data_flags.manifest_from_flags("monitor_", required=False)
  total, optimizer = steps_and_optimizer(manifest)
  result = stages.run_contrastive(
      manifest, CONTRASTIVE.build(), optimizer,
      common_flags.augment_from_flags(FLAGS.image_size),
      common_flags.loop_from_flags(total, FLAGS.monitor_every if monitor else 0, LOOP),
      common_flags.runtime_from_flags(), monitor=monitor, knn_k=FLAGS.knn_k)
  common_flags.print_result(result, FLAGS.run_dir)


if __name__ == "__main__":
  _cli.run_main(main)
