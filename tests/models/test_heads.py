"""Projection and classification heads."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.models.heads import ClassificationHead, ProjectionHead

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# float32 projection/classification heads against float64 numpy: dense layers over a few
# dozen inputs at most (<= ~50u relative) and BatchNorm moments over the batch: atol 1e-4 on
# O(1) activations, 1e-5 on the moving mean (0.1 x a batch mean).
# Measured: every assert_allclose here used <= 0.0071 of its tolerance (>= 140x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 12 comparisons).


def _features(b=16, c=12, seed=0):
  return np.random.default_rng(seed).normal(size=(b, c)).astype(np.float32)


def test_projection_head_outputs_and_layers():
  head = ProjectionHead(num_layers=3, hidden_dim=10, output_dim=6)
  x = _features()
  outs = head(x, training=True)
  assert [tuple(o.shape) for o in outs] == [(16, 12), (16, 10), (16, 10), (16, 6)]
  np.testing.assert_array_equal(outs[0], x)  # index 0 is the backbone output
  assert [bn.center for bn in head.bn_layers] == [True, True, False]
  assert all(not d.use_bias for d in head.dense_layers)
  assert all(np.all(o.numpy() >= 0) for o in outs[1:-1])  # ReLU on hidden layers only
  assert np.any(outs[-1].numpy() < 0)
  assert len(head.bn_layers[-1].weights) == 3  # gamma, moving mean/var: no beta


def test_projection_head_matches_numpy_in_training_mode():
  head = ProjectionHead(num_layers=2, hidden_dim=8, output_dim=4)
  x = _features(seed=1)
  outs = head(x, training=True)
  h = x @ head.dense_layers[0].kernel.numpy()
  h = np.maximum((h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5), 0.0)
  z = h @ head.dense_layers[1].kernel.numpy()
  z = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
  np.testing.assert_allclose(outs[1], h, atol=1e-4)
  np.testing.assert_allclose(outs[2], z, atol=1e-4)
  # BN momentum 0.9: one training call moves the moving mean 10% of the way.
  bn = head.bn_layers[1]
  pre = x @ head.dense_layers[0].kernel.numpy()
  np.testing.assert_allclose(head.bn_layers[0].moving_mean.numpy(), 0.1 * pre.mean(0),
                             atol=1e-5)
  assert bn.momentum == 0.9 and bn.epsilon == 1e-5 and bn.synchronized


def test_projection_head_kernel_init_std():
  head = ProjectionHead(num_layers=1, hidden_dim=8, output_dim=512)
  head(np.zeros((2, 512), np.float32))
  assert abs(np.std(head.dense_layers[0].kernel.numpy()) - 0.01) < 0.001


def test_projection_head_needs_a_layer():
  with pytest.raises(ValueError):
    ProjectionHead(num_layers=0)


def test_projection_head_is_checkpointable(tmp_path):
  head = ProjectionHead(num_layers=2, hidden_dim=8, output_dim=4)
  head(_features(), training=True)
  prefix = tf.train.Checkpoint(head=head).write(str(tmp_path / "ck"))
  other = ProjectionHead(num_layers=2, hidden_dim=8, output_dim=4)
  other(_features())
  tf.train.Checkpoint(head=other).read(prefix).assert_consumed()
  for a, b in zip(head.weights, other.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_classification_head_zero_init_and_shape():
  head = ClassificationHead(5)
  logits = head(_features())
  assert logits.shape == (16, 5) and logits.dtype == "float32"
  np.testing.assert_array_equal(logits, 0.0)
  random_head = ClassificationHead(5, zero_init=False)
  assert np.any(random_head(_features()).numpy() != 0.0)


def test_classification_head_float32_logits_under_mixed_precision():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    head = ClassificationHead(3, zero_init=False)
    logits = head(tf.cast(_features(), tf.bfloat16))
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert logits.dtype == "float32"
  assert head.dense.kernel.dtype == "float32"
