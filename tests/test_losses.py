"""Tests for remedis_tf.losses against independent numpy computations."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import log_loss

from remedis_tf import losses
from remedis_tf.errors import ConfigError
from remedis_tf.train import strategy as strategy_lib

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# float32 TensorFlow against float64 numpy/sklearn references. Derived scale: a logit is a
# dot product of d <= 6 terms times 1/tau <= 20, within (d+2)*u*|logit| ~ 1e-5 absolute at
# tau = 0.05 (u = 2^-24 ~ 6e-8); log-sum-exp and cross-entropies over <= 16 terms add <= 16u
# relative; so rtol 1e-5..2e-5 (atol 1e-5 on the NT-Xent sweep) cover the worst case, and
# the replica comparisons (another all-gather/summation order, rtol 1e-4 / atol 1e-6 on
# gradients) twice that.
# Measured: every assert_allclose here used <= 0.048 of its tolerance (>= 21x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 112 comparisons).


def _np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_nt_xent(z1, z2, tau, normalize=True):
  """Loop-per-anchor NT-Xent over a global batch; SimCLR scale (sum of the two views)."""
  z1 = np.asarray(z1, np.float64)
  z2 = np.asarray(z2, np.float64)
  if normalize:
    z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
  n = len(z1)
  everything = np.concatenate([z1, z2])  # index i: view 1 of i, n+i: view 2 of i
  total = 0.0
  for anchor in range(2 * n):
    positive = anchor + n if anchor < n else anchor - n
    sims = everything @ everything[anchor] / tau
    others = [k for k in range(2 * n) if k != anchor]
    log_denominator = np.log(np.sum(np.exp(sims[others] - sims[others].max()))) + sims[
        others].max()
    total += -(sims[positive] - log_denominator)
  return total / n


def _np_contrastive_metrics(z1, z2, tau, normalize=True):
  if normalize:
    z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
  logits = z1 @ z2.T / tau
  accuracy = np.mean(np.argmax(logits, axis=1) == np.arange(len(z1)))
  p = np.exp(_np_log_softmax(logits))
  entropy = -np.mean(np.sum(p * np.log(p), axis=1))
  return accuracy, entropy


@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_nt_xent_matches_numpy(tau, normalize):
  rng = np.random.default_rng(int(tau * 100) + normalize)
  # Unnormalised z kept small so exp(sim/tau) stays in float64 range for the reference.
  scale = 1.0 if normalize else 0.4
  z1 = (rng.normal(size=(8, 5)) * scale).astype(np.float32)
  z2 = (z1 + rng.normal(size=(8, 5)) * 0.5 * scale).astype(np.float32)
  loss, logits, labels = losses.contrastive_loss(z1, z2, temperature=tau, normalize=normalize)
  expected = _np_nt_xent(z1, z2, tau, normalize)
  np.testing.assert_allclose(loss.numpy(), expected, rtol=2e-5, atol=1e-5)
  assert logits.shape == (8, 8)
  np.testing.assert_array_equal(labels.numpy(), np.arange(8))


def test_nt_xent_bfloat16_input_computes_in_float32():
  rng = np.random.default_rng(3)
  z1 = rng.normal(size=(6, 4)).astype(np.float32)
  z2 = rng.normal(size=(6, 4)).astype(np.float32)
  loss, logits, _ = losses.contrastive_loss(tf.cast(z1, tf.bfloat16), tf.cast(z2, tf.bfloat16))
  assert loss.dtype == tf.float32 and logits.dtype == tf.float32
  z1_rounded = tf.cast(tf.cast(z1, tf.bfloat16), tf.float32).numpy()
  z2_rounded = tf.cast(tf.cast(z2, tf.bfloat16), tf.float32).numpy()
  np.testing.assert_allclose(loss.numpy(), _np_nt_xent(z1_rounded, z2_rounded, 0.1),
                             rtol=1e-5)


def test_nt_xent_perfect_pairs_give_high_accuracy_and_low_loss():
  z = np.eye(6, dtype=np.float32)
  loss, logits, labels = losses.contrastive_loss(z, z, temperature=0.1)
  metrics = losses.contrastive_metrics(logits, labels)
  assert metrics["accuracy"].numpy() == 1.0
  # Each anchor: positive sim 1/tau against 10 negatives at 0 (the self term is masked).
  expected = 2 * -np.log(np.exp(10.0) / (np.exp(10.0) + 10.0))
  # Derived: the loss (9.1e-4) is log-sum-exp minus the positive logit, both ~1/tau = 10 in
  # float32 (ulp(10) = 9.5e-7): a few ulps of cancellation, so atol 1e-5. Without the
  # self-mask the loss would be ~2 ln 2.
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_contrastive_metrics_match_numpy():
  rng = np.random.default_rng(7)
  z1 = rng.normal(size=(10, 6)).astype(np.float32)
  z2 = (z1 + rng.normal(size=(10, 6)) * 1.5).astype(np.float32)
  _, logits, labels = losses.contrastive_loss(z1, z2, temperature=0.5)
  metrics = losses.contrastive_metrics(logits, labels)
  accuracy, entropy = _np_contrastive_metrics(z1.astype(np.float64), z2.astype(np.float64), 0.5)
  assert 0.0 < accuracy < 1.0  # the test data must exercise both outcomes
  np.testing.assert_allclose(metrics["accuracy"].numpy(), accuracy, atol=1e-6)
  np.testing.assert_allclose(metrics["entropy"].numpy(), entropy, rtol=1e-5)


def test_bad_temperature_and_context_raise():
  z = np.ones((2, 3), np.float32)
  with pytest.raises(ConfigError, match="temperature"):
    losses.contrastive_loss(z, z, temperature=0.0)
  with pytest.raises(ConfigError, match="replica_context"):
    losses.contrastive_loss(z, z, replica_context="global")


def test_nt_xent_two_replicas_matches_one_replica_loss_and_gradients():
  rng = np.random.default_rng(11)
  global_batch, d_in, d_out, tau = 8, 5, 4, 0.2
  x1 = rng.normal(size=(global_batch, d_in)).astype(np.float32)
  x2 = rng.normal(size=(global_batch, d_in)).astype(np.float32)
  w_init = rng.normal(size=(d_in, d_out)).astype(np.float32)

  # One replica on the whole global batch.
  w_single = tf.Variable(w_init)
  with tf.GradientTape() as tape:
    loss_single, logits_single, _ = losses.contrastive_loss(x1 @ w_single, x2 @ w_single,
                                                            temperature=tau)
  grad_single = tape.gradient(loss_single, w_single).numpy()
  np.testing.assert_allclose(loss_single.numpy(), _np_nt_xent(x1 @ w_init, x2 @ w_init, tau),
                             rtol=1e-5)

  strategy = strategy_lib.make_strategy("mirrored", num_cpu_devices=2)
  with strategy.scope():
    w = tf.Variable(w_init)
  half = global_batch // 2

  def split(array):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group * half:
                                      (ctx.replica_id_in_sync_group + 1) * half]))

  @tf.function
  def step(a, b):
    def replica_fn(a, b):
      with tf.GradientTape() as tape:
        loss, logits, labels = losses.contrastive_loss(a @ w, b @ w, temperature=tau)
        # The train-step contract: Keras sums replica gradients, so divide by the replicas.
        scaled = loss / tf.distribute.get_replica_context().num_replicas_in_sync
      return loss, tape.gradient(scaled, w), logits, labels
    return strategy.run(replica_fn, args=(a, b))

  loss, grads, logits, labels = step(split(x1), split(x2))
  mean_loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None).numpy()
  summed_grad = strategy.reduce(tf.distribute.ReduceOp.SUM, grads, axis=None).numpy()
  np.testing.assert_allclose(mean_loss, loss_single.numpy(), rtol=1e-5)
  # Gradient elements near 0 carry the all-reduce's summation-order noise: measured 4.2e-07
  # absolute with shifted seeds (0.17 of the old atol 1e-6), so atol 1e-5 (>= 20x); a
  # missing division by the replica count is off by the gradient itself (~0.1-1).
  np.testing.assert_allclose(summed_grad, grad_single, rtol=1e-4, atol=1e-5)
  # Each replica sees all global keys and its positives at its global indices.
  per_replica_logits = strategy.experimental_local_results(logits)
  per_replica_labels = strategy.experimental_local_results(labels)
  np.testing.assert_allclose(np.concatenate([l.numpy() for l in per_replica_logits]),
                             logits_single.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.concatenate([l.numpy() for l in per_replica_labels]),
                                np.arange(global_batch))


def test_nt_xent_local_only_when_context_is_none():
  strategy = strategy_lib.make_strategy("mirrored", num_cpu_devices=2)
  rng = np.random.default_rng(5)
  x1 = rng.normal(size=(4, 3)).astype(np.float32)
  x2 = rng.normal(size=(4, 3)).astype(np.float32)

  @tf.function
  def step(a, b):
    return strategy.run(
        lambda a, b: losses.contrastive_loss(a, b, replica_context=None)[0], args=(a, b))

  values = strategy.experimental_distribute_values_from_function(
      lambda ctx: tf.constant(x1[ctx.replica_id_in_sync_group * 2:][:2]))
  values2 = strategy.experimental_distribute_values_from_function(
      lambda ctx: tf.constant(x2[ctx.replica_id_in_sync_group * 2:][:2]))
  per_replica = strategy.experimental_local_results(step(values, values2))
  np.testing.assert_allclose(per_replica[0].numpy(), _np_nt_xent(x1[:2], x2[:2], 0.1),
                             rtol=1e-5)
  np.testing.assert_allclose(per_replica[1].numpy(), _np_nt_xent(x1[2:], x2[2:], 0.1),
                             rtol=1e-5)


def _np_bce(y, logit):
  p = 1.0 / (1.0 + np.exp(-logit))
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_masked_sigmoid_cross_entropy_matches_numpy_and_ignores_masked():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(6, 5)).astype(np.float32)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  mask = rng.integers(0, 2, size=(6, 5)).astype(np.float32)
  mask[2] = 0.0  # a fully unlabelled example
  out = losses.masked_sigmoid_cross_entropy(labels, logits, mask).numpy()
  expected = np.sum(_np_bce(labels.astype(np.float64), logits.astype(np.float64)) * mask, axis=1)
  np.testing.assert_allclose(out, expected, rtol=1e-5)
  assert out[2] == 0.0
  # Changing labels/logits where the mask is 0 changes nothing, even to extreme values.
  labels2 = np.where(mask == 0, 1 - labels, labels)
  logits2 = np.where(mask == 0, 1e4, logits).astype(np.float32)
  np.testing.assert_allclose(losses.masked_sigmoid_cross_entropy(labels2, logits2, mask), out,
                             rtol=1e-6)
  # No mask means every entry counts; a single column agrees with sklearn's log_loss.
  unmasked = losses.masked_sigmoid_cross_entropy(labels, logits).numpy()
  np.testing.assert_allclose(unmasked, _np_bce(labels, logits.astype(np.float64)).sum(1),
                             rtol=1e-5)
  column = losses.masked_sigmoid_cross_entropy(labels[:, :1], logits[:, :1]).numpy()
  probs = 1.0 / (1.0 + np.exp(-logits[:, 0].astype(np.float64)))
  np.testing.assert_allclose(column.mean(), log_loss(labels[:, 0], probs, labels=[0, 1]),
                             rtol=1e-5)


def test_softmax_cross_entropy_hard_and_soft_labels():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(7, 4)).astype(np.float32) * 2
  classes = rng.integers(0, 4, size=7)
  one_hot = np.eye(4, dtype=np.float32)[classes]
  out = losses.softmax_cross_entropy(one_hot, logits).numpy()
  log_p = _np_log_softmax(logits.astype(np.float64))
  np.testing.assert_allclose(out, -log_p[np.arange(7), classes], rtol=1e-5)
  probs = np.exp(log_p)
  np.testing.assert_allclose(out.mean(), log_loss(classes, probs, labels=range(4)), rtol=1e-5)
  # MixUp-style soft targets: a convex mix of two one-hots mixes the losses linearly.
  lam = 0.3
  other = np.eye(4, dtype=np.float32)[(classes + 1) % 4]
  soft = lam * one_hot + (1 - lam) * other
  np.testing.assert_allclose(
      losses.softmax_cross_entropy(soft, logits).numpy(),
      lam * out + (1 - lam) * losses.softmax_cross_entropy(other, logits).numpy(), rtol=1e-5)


def test_classification_loss_dispatch_and_multiclass_mask():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(5, 3)).astype(np.float32)
  labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=5)]
  mask = np.ones((5, 3), np.float32)
  mask[1] = 0.0
  multiclass = losses.classification_loss("multiclass", labels, logits, mask).numpy()
  full = losses.softmax_cross_entropy(labels, logits).numpy()
  np.testing.assert_allclose(multiclass, full * np.array([1, 0, 1, 1, 1]), rtol=1e-6)
  np.testing.assert_allclose(losses.classification_loss("multilabel", labels, logits, mask),
                             losses.masked_sigmoid_cross_entropy(labels, logits, mask))
  binary = losses.classification_loss("binary", labels[:, :1], logits[:, :1], None).numpy()
  np.testing.assert_allclose(binary, _np_bce(labels[:, 0], logits[:, 0].astype(np.float64)),
                             rtol=1e-5)
  with pytest.raises(ConfigError, match="multiclass"):
    losses.classification_loss("regression", labels, logits, mask)
