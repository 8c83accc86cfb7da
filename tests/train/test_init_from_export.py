"""--init from our own classifier SavedModel: it loads as what it is (a native backbone of
the recorded variant, plus a head that is reported unused), never as an opaque wrapped
"backbone" whose outputs are probabilities (issue 19, bug 1)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import classifier
from remedis_tf.train import init_weights
from remedis_tf.train.supervised import SupervisedConfig, SupervisedTask
from remedis_tf.weights import classifier_export

SIZE = 32


def _task(manifest, init="", variant="tiny", from_projection_layer=0, seed=0):
  config = SupervisedConfig(variant=variant, global_batch_size=4, init=init, seed=seed,
                            from_projection_layer=from_projection_layer, projection_dim=16)
  optimizer = OptimizerConfig(name="sgd", base_lr=0.1, lr_scaling="none",
                              schedule="constant", total_steps=1)
  task = SupervisedTask(config, optimizer, None, SIZE, manifest)
  task.build(tf.distribute.get_strategy())
  return task


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny three-label classifier (random, non-zero head) exported as a SavedModel."""
  root = tmp_path_factory.mktemp("export")
  task = _task(Manifest((), ("A", "B", "C"), "multilabel", "schema"), seed=5,
               from_projection_layer=1)
  rng = np.random.default_rng(0)
  for v in task.classification_head.variables:
    v.assign(rng.standard_normal(v.shape).astype(np.float32))
  path = classifier.export_classifier_savedmodel(task, str(root / "clf"))
  return task, path


def test_classifier_export_is_its_own_init_kind(exported):
  _, path = exported
  assert init_weights.init_kind(path) == "classifier_savedmodel"
  # Recognised by its variables even when the sidecar is lost.
  os.rename(os.path.join(path, classifier_export.SIDECAR_FILE), path + ".json")
  try:
    assert init_weights.init_kind(path) == "classifier_savedmodel"
    with pytest.raises(ConfigError, match="--variant"):
      init_weights.build_backbone("", path, SIZE)
  finally:
    os.rename(path + ".json", os.path.join(path, classifier_export.SIDECAR_FILE))


@pytest.mark.parametrize("from_projection_layer", [0, 1])
def test_finetune_init_from_classifier_export_restores_the_backbone(exported,
                                                                    from_projection_layer):
  source, path = exported
  manifest = Manifest((), ("X", "Y"), "multilabel", "schema")
  task = _task(manifest, init=path, variant="", from_projection_layer=from_projection_layer)
  notes = task.initialize()
  text = " ".join(notes)
  assert "savedmodel_layer" not in text and "WARNING" not in text, text
  assert "not used" in text and "[256, 3]" in text, text
  assert task.backbone.variant == "tiny"
  x = np.random.default_rng(1).random((2, SIZE, SIZE, 3), dtype=np.float32)
  np.testing.assert_array_equal(task.backbone(x)["pooled"], source.backbone(x)["pooled"])
  if from_projection_layer:
    for a, b in zip(task.projection_head.variables, source.projection_head.variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  # A new head on the 256 backbone (or projection layer 1) features, one column per label.
  assert tuple(task.classification_head.trainable_variables[0].shape) == (256, 2)


def test_classifier_export_refuses_another_variant(exported):
  _, path = exported
  with pytest.raises(ConfigError, match="holds a tiny backbone but the variant is small"):
    init_weights.build_backbone("small", path, SIZE)


def test_wrapped_savedmodel_is_warned_about(tmp_path):
  class Opaque(tf.Module):
    def __init__(self):
      super().__init__()
      self.w = tf.Variable(tf.ones([3, 4]))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
      return tf.reduce_mean(images, axis=(1, 2)) @ self.w

  path = str(tmp_path / "opaque")
  tf.saved_model.save(Opaque(), path)
  assert init_weights.init_kind(path) == "savedmodel"
  _, notes = init_weights.build_backbone("tiny", path, SIZE)
  assert notes[0].startswith("WARNING:") and "variant tiny is ignored" in notes[0], notes

