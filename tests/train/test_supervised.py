"""Supervised fine-tuning end to end: it learns an easy task, linear evaluation keeps the
backbone frozen, and backbone-only restore from a contrastive-style checkpoint."""

import os

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import CheckpointError
from remedis_tf.models.heads import ProjectionHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import stages
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig, SupervisedTask
from remedis_tf.weights import bit_npz
from tests.eval.tiny_data import brightness_set

# Tolerances here (docs/testing.md):
# derived: both sides are the same exact AUC computed in float64 from the same scores
# (summation order only, ~1e-15): abs 1e-9.

SIZE = 32


def _sgd(steps, lr=0.05):
  return OptimizerConfig(name="sgd", base_lr=lr, lr_scaling="none", schedule="constant",
                         total_steps=steps, weight_decay=0.0)


def _auc(labels, scores):
  """Mann-Whitney AUC by brute force over all positive/negative pairs."""
  pos, neg = scores[labels == 1], scores[labels == 0]
  diff = pos[:, None] - neg[None, :]
  return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_finetuning_learns_an_easy_task(tmp_path):
  train, _ = brightness_set(str(tmp_path), "train", num_patients=16, seed=0)
  test, _ = brightness_set(str(tmp_path), "test", num_patients=10, seed=1)
  run_dir = str(tmp_path / "run")
  config = SupervisedConfig(variant="tiny", global_batch_size=16, seed=3)
  result = stages.run_supervised(train, config, _sgd(40), None, SIZE,
                                 LoopConfig(run_dir, 40, steps_per_loop=10, log_every=40),
                                 log=lambda _: None)
  assert result.final_step == 40
  task, _ = stages.load_classifier(run_dir, which="latest")
  evaluated, preds = stages.evaluate_task(task, test, SIZE)
  auc = _auc(preds.labels[:, 0], preds.scores[:, 0])
  assert auc > 0.9
  assert evaluated["metrics"]["mean_auc"]["value"] == pytest.approx(auc, abs=1e-9)


def test_linear_evaluation_leaves_backbone_unchanged(tmp_path):
  train, _ = brightness_set(str(tmp_path), "train", num_patients=8, seed=0)
  init = ResNetV2("tiny").build_for(SIZE)
  npz = bit_npz.save_bit_npz(init, str(tmp_path / "init.npz"), include_head=False)
  before = bit_npz.backbone_bit_arrays(init)
  run_dir = str(tmp_path / "linear")
  config = SupervisedConfig(variant="tiny", global_batch_size=8, train_mode="linear",
                            init=npz)
  stages.run_supervised(train, config, _sgd(6, lr=0.5), None, SIZE,
                        LoopConfig(run_dir, 6, steps_per_loop=3), log=lambda _: None)
  task, _ = stages.load_classifier(run_dir, which="latest")
  after = bit_npz.backbone_bit_arrays(task.backbone)
  assert sorted(after) == sorted(before)
  for key, value in before.items():
    np.testing.assert_array_equal(after[key], value, err_msg=key)
  # The (zero-initialised) head did train.
  assert np.abs(task.classification_head.trainable_variables[0].numpy()).max() > 0


def _contrastive_like_checkpoint(run_dir, seed=7):
  """A checkpoint laid out as a contrastive run writes it (backbone, projection head,
  optimizer, step) in run_dir/checkpoints; returns the backbone it saved."""
  tf.keras.utils.set_random_seed(seed)
  backbone = ResNetV2("tiny").build_for(SIZE)
  head = ProjectionHead(2, backbone.output_channels, 16, name="projection_head")
  head(tf.zeros((2, backbone.output_channels)))
  step = tf.Variable(5, dtype=tf.int64)
  checkpoint = tf.train.Checkpoint(backbone=backbone, projection_head=head, step=step)
  tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"), 1).save(5)
  return backbone


def _task(init, from_projection_layer, manifest):
  config = SupervisedConfig(variant="tiny", global_batch_size=4, init=init,
                            from_projection_layer=from_projection_layer, projection_dim=16)
  task = SupervisedTask(config, _sgd(1), None, SIZE, manifest)
  task.build(tf.distribute.get_strategy())
  return task


def test_backbone_only_restore_from_contrastive_checkpoint(tmp_path):
  saved = _contrastive_like_checkpoint(str(tmp_path / "stage2"))
  manifest = Manifest((), ("Bright",), "binary", "schema")
  task = _task(str(tmp_path / "stage2"), 0, manifest)
  assert task.projection_head is None
  notes = task.initialize()
  text = " ".join(notes)
  assert "backbone" in text
  for a, b in zip(saved.variables, task.backbone.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # The classification head is new (zero-initialised), not restored.
  assert not np.any(task.classification_head.trainable_variables[0].numpy())


def test_restore_refuses_missing_projection_head(tmp_path):
  # A backbone-only checkpoint: fine-tuning from projection layer 1 cannot restore the
  # head, and the init says so instead of silently starting it from random weights.
  backbone = ResNetV2("tiny").build_for(SIZE)
  tf.train.CheckpointManager(tf.train.Checkpoint(backbone=backbone),
                             str(tmp_path / "ckpt" / "checkpoints"), 1).save(1)
  manifest = Manifest((), ("Bright",), "binary", "schema")
  task = _task(str(tmp_path / "ckpt"), 1, manifest)
  with pytest.raises(CheckpointError, match="projection_head"):
    task.initialize()
  # The same checkpoint restores fine for fine-tuning from the backbone output.
  task = _task(str(tmp_path / "ckpt"), 0, manifest)
  assert "backbone" in " ".join(task.initialize())
  for a, b in zip(backbone.variables, task.backbone.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def _preset_classifier(tmp_path, projection):
  from remedis_tf.models.classifier import Classifier  # pylint: disable=g-import-not-at-top
  from remedis_tf.models.heads import ClassificationHead  # pylint: disable=g-import-not-at-top
  from remedis_tf.weights import preset  # pylint: disable=g-import-not-at-top
  # Shaped like _task's head: tiny width 256, projection_dim 16.
  proj = ProjectionHead(2, 256, 16, name="projection_head") if projection else None
  model = Classifier(ResNetV2("tiny"), ClassificationHead(1, name="classification_head"), proj,
                     1 if projection else 0).build_for(SIZE)
  rng = np.random.default_rng(0)
  for v in model.weights:
    v.assign((0.5 + rng.random(v.shape)).astype(np.float32))
  return model, preset.save_to_preset(model, str(tmp_path / f"preset{int(projection)}"))


def test_init_from_classifier_preset_restores_backbone_and_projection_head(tmp_path):
  model, path = _preset_classifier(tmp_path, projection=True)
  manifest = Manifest((), ("Bright",), "binary", "schema")
  task = _task(path, 1, manifest)
  notes = " ".join(task.initialize())
  assert "backbone from preset" in notes and "projection head" in notes
  for a, b in zip(model.backbone.weights, task.backbone.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  for a, b in zip(model.projection_head.weights, task.projection_head.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # A preset without a projection head cannot start a fine-tune from projection layer 1.
  _, headless = _preset_classifier(tmp_path, projection=False)
  with pytest.raises(CheckpointError, match="holds no projection head"):
    _task(headless, 1, manifest).initialize()
