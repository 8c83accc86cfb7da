r"""Export image embeddings (pooled features) of a model for a dataset.

--model may be a fine-tuning or contrastive run directory, a BiT .npz (with --variant, or
guessed from the shapes), a REMEDIS / BiT hub-style SavedModel, or a classifier SavedModel
exported by experiments/evaluate.py. The data is given with the usual data flags.

Example (REMEDIS stage-2 features of the CheXpert validation images):

  python -m experiments.embed --model=/runs/cxr_stage2 --source=chexpert \
    --csv=/data/CheXpert-v1.0/valid.csv --output=/runs/cxr_stage2_valid.npz

The .npz holds ids, patients, embeddings [N,C] float32, labels, mask, label_names and model
(string arrays are fixed-width unicode: np.load(path, allow_pickle=False) reads them). An
--output without .npz becomes a directory of .npy files.
"""

from __future__ import annotations

from absl import flags

from experiments import _cli, data_flags
from remedis_tf.data import augment as augment_lib
from remedis_tf.data.manifest import describe
from remedis_tf.runs import embed

FLAGS = flags.FLAGS

flags.DEFINE_string("model", None, "Run directory (fine-tuning or contrastive), BiT .npz, "
                    "timm .safetensors, Keras preset folder (backbone or "
                    "classifier), SavedModel directory, or one of our checkpoint prefixes "
                    "(with --variant).",
                    required=True)
flags.DEFINE_string("variant", None, "Backbone variant (r50x1, r152x2, tiny, ...) when the "
                    "model does not record it (.npz files are guessed from their shapes; "
                    "bare checkpoints need it).")
flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint of a fine-tuning run "
                  "directory: best (model selection) or latest.")
data_flags.define_data_flags("", role="embedded")
flags.DEFINE_string("output", None, "Output .npz file, or a directory for .npy files "
                    "(local or gs://).", required=True)
flags.DEFINE_integer("image_size", 0, "Input resolution; 0 = the size the model was trained "
                     "at (required for .npz, hub SavedModels and bare checkpoints).")
flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
flags.DEFINE_float("crop_fraction", augment_lib.EVAL_CROP_FRACTION, "Centre crop (fraction "
                   "of the shorter side) before resizing, as in evaluation; 1.0 = no crop.")


def main(argv):
  del argv
  manifest = data_flags.manifest_from_flags("")
  print(f"[data] {describe(manifest)}")
  info = embed.export_embeddings(
      FLAGS.model, manifest, FLAGS.output, image_size=FLAGS.image_size or None,
      batch_size=FLAGS.batch_size, variant=FLAGS.variant, which=FLAGS.which,
      crop_fraction=FLAGS.crop_fraction)
  print(f"[embed] {info['num_images']} x {info['dim']} embeddings -> {info['out_path']}")


if __name__ == "__main__":
  _cli.run_main(main)
