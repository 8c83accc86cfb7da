r"""Frozen-feature evaluation of one or more models: linear probe and kNN on pooled features.

The backbone is frozen; the train set (--train_* data flags) is embedded to fit a
logistic-regression probe per label and to serve as the kNN neighbour bank, and the test
set (--test_* data flags, patients disjoint from the train set) is scored. Intervals are
patient-level bootstrap CIs over test patients; every model after the first also gets the
paired difference to the first model (same resampled patients).

Example (stage-1 vs stage-2 features of a REMEDIS run on CheXpert):

  python -m experiments.frozen_eval \
    --model=stage1=/runs/cxr_stage1 --model=stage2=/runs/cxr_stage2 \
    --train_source=chexpert --train_csv=/data/chexpert_train_small.csv \
    --test_source=chexpert --test_csv=/data/CheXpert-v1.0/valid.csv \
    --output=/runs/frozen_stage1_vs_stage2.json

Each --model is NAME=SOURCE, SOURCE being anything experiments/embed.py takes (a
fine-tuning or contrastive run directory, a BiT .npz, a SavedModel).
"""

from __future__ import annotations

from absl import flags

from experiments import _cli, data_flags
from experiments.config_flags import ConfigFlags, Flag
from remedis_tf import io_utils
from remedis_tf.errors import ConfigError
from remedis_tf.eval import frozen
from remedis_tf.runs import frozen as frozen_runs

FLAGS = flags.FLAGS

flags.DEFINE_multi_string("model", None, "A model to evaluate, NAME=SOURCE (repeat the flag; "
                          "the first is the reference of the paired differences). SOURCE: a "
                          "fine-tuning or contrastive run directory, BiT .npz or SavedModel.",
                          required=True)
data_flags.define_data_flags("train_", role="probe-training / kNN-bank")
data_flags.define_data_flags("test_", role="test")
flags.DEFINE_string("output", None, "JSON file for the results (local or gs://).",
                    required=True)
flags.DEFINE_integer("image_size", 0, "Input resolution; 0 = the size each model was trained "
                     "at (required for .npz and hub SavedModels).")
FROZEN = ConfigFlags(frozen.FrozenEvalConfig, {
    "knn_k": Flag(help="Neighbours per test image in the kNN classifier."),
    "knn_temperature": Flag(help="Temperature of the kNN neighbour weights exp(cosine / T)."),
    "probe_c": Flag(help="Inverse L2 strength C of the logistic-regression probe (features "
                    "are standardised on the train set)."),
    "num_bootstrap": Flag(help="Patient-level bootstrap resamples of the test set for the 95% "
                          "CIs."),
    "seed": Flag(),
    "batch_size": Flag(),
})
FROZEN.define()

def _models(values):
  models = {}
  for value in values:
    name, sep, source = value.partition("=")
    if not sep or not name or not source:
      raise ConfigError(f"--model={value}: expected NAME=SOURCE")
    if name in models:
      raise ConfigError(f"--model: name {name!r} given twice")
    models[name] = source
  return models


def main(argv):
  del argv
  models = _models(FLAGS.model)
  train = data_flags.manifest_from_flags("train_")
  test = data_flags.manifest_from_flags("test_")
  result = frozen_runs.compare_models(models, train, test, FLAGS.image_size or None,
                                      FROZEN.build())
  io_utils.atomic_write_json(FLAGS.output, result)
  print(f"[frozen] wrote {FLAGS.output}")


if __name__ == "__main__":
  _cli.run_main(main)
