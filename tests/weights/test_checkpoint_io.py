"""Backbone checkpoints and partial restore of training-run items."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.errors import CheckpointError
from remedis_tf.models.heads import ClassificationHead, ProjectionHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.weights import checkpoint_io


def _images(seed=0):
  return np.random.default_rng(seed).random((2, 32, 40, 3), dtype=np.float32)


def _randomised(model, seed):
  rng = np.random.default_rng(seed)
  for v in model.weights:
    v.assign(rng.standard_normal(v.shape).astype(np.float32))
  return model


def _run_checkpoint(run_dir, seed=1):
  """A training-style run directory written through CheckpointManager."""
  backbone = _randomised(ResNetV2("tiny").build_for(32), seed)
  proj = ProjectionHead(2, 16, 8)
  proj(backbone(_images())["pooled"], training=True)
  opt = keras.optimizers.SGD(0.1, momentum=0.9)
  opt.build(backbone.trainable_variables + proj.trainable_variables)
  step = tf.Variable(7, dtype=tf.int64)
  ckpt = tf.train.Checkpoint(backbone=backbone, projection_head=proj, optimizer=opt, step=step)
  manager = tf.train.CheckpointManager(ckpt, str(run_dir / "checkpoints"), max_to_keep=2)
  manager.save(checkpoint_number=3)
  return backbone, proj


def test_backbone_round_trip_is_exact(tmp_path):
  model = _randomised(ResNetV2("tiny").build_for(32), seed=2)
  prefix = checkpoint_io.save_backbone_checkpoint(model, str(tmp_path / "bb" / "backbone"))
  fresh = ResNetV2("tiny")  # not built: restore builds it
  report = checkpoint_io.restore_backbone(fresh, prefix)
  assert report.restored == ("backbone",) and report.num_variables == len(model.weights) == 43
  for a, b in zip(model.weights, fresh.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  x = _images()
  np.testing.assert_array_equal(model(x)["feature_map"], fresh(x)["feature_map"])
  # A directory without a state file but a single checkpoint resolves to it.
  assert checkpoint_io.resolve_checkpoint(str(tmp_path / "bb")) == prefix


def test_restore_backbone_from_run_directory(tmp_path):
  backbone, _ = _run_checkpoint(tmp_path / "run")
  for path in (tmp_path / "run", tmp_path / "run" / "checkpoints"):
    fresh = ResNetV2("tiny").build_for(32)
    checkpoint_io.restore_backbone(fresh, str(path))
    for a, b in zip(backbone.weights, fresh.weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert checkpoint_io.resolve_checkpoint(str(tmp_path / "run")).endswith("ckpt-3")


def test_other_variant_is_rejected_with_shapes(tmp_path):
  prefix = checkpoint_io.save_backbone_checkpoint(ResNetV2("small"), str(tmp_path / "small"))
  target = ResNetV2("tiny").build_for(32)
  before = [v.numpy().copy() for v in target.weights]
  with pytest.raises(CheckpointError) as info:
    checkpoint_io.restore_backbone(target, prefix)
  msg = str(info.value)
  assert "\n" not in msg and "backbone (tiny)" in msg
  # First the root convolution, then in the model's variable order (block 1 before the
  # final norm, which the checkpoint's breadth-first order would list second).
  assert ("43 shape mismatch(es): backbone/root_conv/_kernel expected (7, 7, 3, 8) found "
          "(7, 7, 3, 16); backbone/block1_unit01/") in msg
  for b, v in zip(before, target.weights):
    np.testing.assert_array_equal(b, v.numpy())


def test_deeper_checkpoint_does_not_load_into_shallower_model(tmp_path):
  from remedis_tf.models.resnet_v2 import ResNetSpec
  deep = ResNetV2("deep", spec=ResNetSpec((2, 1, 1, 1), 1, base_width=8, num_groups=4))
  prefix = checkpoint_io.save_backbone_checkpoint(deep, str(tmp_path / "deep"))
  with pytest.raises(CheckpointError, match=r"unexpected: backbone/block1_unit02/"):
    checkpoint_io.restore_backbone(ResNetV2("tiny"), prefix)


def test_restore_items_partial(tmp_path):
  backbone, proj = _run_checkpoint(tmp_path / "run", seed=5)
  new_bb = ResNetV2("tiny").build_for(32)
  new_proj = ProjectionHead(2, 16, 8)
  new_proj(new_bb(_images())["pooled"])
  head = ClassificationHead(3)
  head(np.zeros((1, 256), np.float32))
  step = tf.Variable(0, dtype=tf.int64)
  report = checkpoint_io.restore_items(str(tmp_path / "run"), backbone=new_bb,
                                       projection_head=new_proj, classification_head=head,
                                       step=step)
  assert report.restored == ("backbone", "projection_head", "step")
  assert report.absent == ("classification_head",)
  assert int(step.numpy()) == 7
  for a, b in zip(proj.weights, new_proj.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  np.testing.assert_array_equal(head.weights[0].numpy(), 0.0)  # untouched

  opt = keras.optimizers.SGD(0.1, momentum=0.9)
  opt.build(new_bb.trainable_variables + new_proj.trainable_variables)
  report = checkpoint_io.restore_items(str(tmp_path / "run"), optimizer=opt)
  assert report.restored == ("optimizer",) and report.num_variables > 2
  assert int(opt.iterations.numpy()) == 0

  wrong_proj = ProjectionHead(2, 32, 8)
  wrong_proj(np.zeros((2, 256), np.float32))
  with pytest.raises(CheckpointError, match=r"projection_head/dense_0/_kernel expected "
                                            r"\(256, 32\) found \(256, 16\)"):
    checkpoint_io.restore_items(str(tmp_path / "run"), projection_head=wrong_proj)


def test_missing_checkpoint_and_missing_backbone(tmp_path):
  with pytest.raises(CheckpointError, match="no checkpoint found"):
    checkpoint_io.restore_backbone(ResNetV2("tiny"), str(tmp_path))
  prefix = tf.train.Checkpoint(step=tf.Variable(1)).write(str(tmp_path / "only_step"))
  with pytest.raises(CheckpointError, match="no backbone item"):
    checkpoint_io.restore_backbone(ResNetV2("tiny"), prefix)
