"""convert_weights on our own classifiers (issue 19, bug 5): an exported classifier
SavedModel converts to a BiT .npz (backbone, and its head with --with_head); --with_head on a
fine-tuned run directory or classifier preset carries the head, or says why it cannot."""

import numpy as np
import pytest
import tensorflow as tf

from experiments import convert_weights
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import classifier
from remedis_tf.train.supervised import SupervisedConfig, SupervisedTask
from remedis_tf.weights import bit_npz

SIZE = 32


def _task(from_projection_layer=0, seed=0):
  config = SupervisedConfig(variant="tiny", global_batch_size=4, seed=seed,
                            from_projection_layer=from_projection_layer, projection_dim=16)
  optimizer = OptimizerConfig(name="sgd", base_lr=0.1, lr_scaling="none",
                              schedule="constant", total_steps=1)
  task = SupervisedTask(config, optimizer, None, SIZE,
                        Manifest((), ("A", "B", "C"), "multilabel", "schema"))
  task.build(tf.distribute.get_strategy())
  rng = np.random.default_rng(seed)
  for v in task.classification_head.variables:
    v.assign(rng.standard_normal(v.shape).astype(np.float32))
  return task


@pytest.fixture(scope="module")
def trained():
  return _task(seed=4)


def _images():
  return np.random.default_rng(1).random((2, SIZE, SIZE, 3), dtype=np.float32)


def _assert_carries(npz, task, with_head):
  arrays = bit_npz.read_npz(npz)
  expected = bit_npz.backbone_bit_arrays(task.backbone, False)
  assert {k for k in arrays if not k.startswith(bit_npz.HEAD_PREFIX)} == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(arrays[key], value, err_msg=key)
  assert (bit_npz.HEAD_KERNEL in arrays) == with_head
  if with_head:
    assert arrays[bit_npz.HEAD_KERNEL].shape == (1, 1, 256, 3)
    model = ResNetV2("tiny", num_classes=3).build_for(SIZE)
    bit_npz.load_bit_npz(model, npz, load_head=True)
    np.testing.assert_allclose(model(_images())["logits"],
                               task.forward(_images())["logits"], rtol=1e-5, atol=1e-5)


def test_exported_classifier_savedmodel_converts_to_npz(trained, tmp_path):
  export = classifier.export_classifier_savedmodel(trained, str(tmp_path / "clf"))
  summary = convert_weights.convert(export, str(tmp_path / "bb.npz"))
  assert "classifier SavedModel" in summary and "tiny" in summary, summary
  _assert_carries(str(tmp_path / "bb.npz"), trained, with_head=False)
  summary = convert_weights.convert(export, str(tmp_path / "head.npz"), with_head=True)
  assert "head 3 classes" in summary, summary
  _assert_carries(str(tmp_path / "head.npz"), trained, with_head=True)
  names = [name for name, _, _ in convert_weights.inspect(export, "savedmodel")]
  assert "backbone/root_conv/_kernel" in names and "classification_head/dense/_kernel" in names


def test_run_directory_and_classifier_preset_carry_the_head(trained, tmp_path):
  run_dir = tmp_path / "run"
  checkpoint = tf.train.Checkpoint(backbone=trained.backbone,
                                   classification_head=trained.classification_head)
  tf.train.CheckpointManager(checkpoint, str(run_dir / "checkpoints"), 1).save(3)
  convert_weights.convert(str(run_dir), str(tmp_path / "run.npz"), with_head=True)
  _assert_carries(str(tmp_path / "run.npz"), trained, with_head=True)
  presetdir = classifier.export_classifier_preset(trained, str(tmp_path / "preset"))
  convert_weights.convert(presetdir, str(tmp_path / "preset.npz"), with_head=True)
  _assert_carries(str(tmp_path / "preset.npz"), trained, with_head=True)


def test_a_head_that_cannot_be_carried_is_refused(tmp_path):
  task = _task(from_projection_layer=1, seed=2)
  export = classifier.export_classifier_savedmodel(task, str(tmp_path / "clf"))
  with pytest.raises(ConfigError, match="reads projection layer 1"):
    convert_weights.convert(export, str(tmp_path / "x.npz"), with_head=True)
  presetdir = classifier.export_classifier_preset(task, str(tmp_path / "preset"))
  with pytest.raises(ConfigError, match="reads projection layer 1"):
    convert_weights.convert(presetdir, str(tmp_path / "y.npz"), with_head=True)
  # The backbone alone still converts.
  convert_weights.convert(export, str(tmp_path / "bb.npz"))
  headless = bit_npz.save_bit_npz(ResNetV2("tiny").build_for(SIZE), str(tmp_path / "h.npz"))
  with pytest.raises(ConfigError, match="has no classification head to carry"):
    convert_weights.convert(headless, str(tmp_path / "z.npz"), with_head=True)
