"""XLA-compilable Gamma/Beta samplers: distributions, determinism, XLA == graph mode."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from remedis_tf import stateless_random as R

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# see the comments at each site (statistical tolerances from standard errors; XLA vs eager
# measured).
# Measured: every assert_allclose here used <= 0.028 of its tolerance (>= 35x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 10 comparisons).

N = 20000


@pytest.mark.parametrize("alpha", [0.1, 0.4, 2.0])
def test_log_gamma_follows_gamma_distribution(alpha):
  samples = np.exp(R.log_gamma([N], alpha, tf.constant([1, 2])).numpy().astype(np.float64))
  assert scipy.stats.kstest(samples, scipy.stats.gamma(alpha).cdf).pvalue > 1e-3
  # Statistical, not rounding (the Philox stream is integer, identical on every CPU): the
  # mean of N Gamma(alpha) draws has relative standard error 1/sqrt(alpha N), 0.022 at
  # alpha 0.1; 4 standard errors.
  np.testing.assert_allclose(samples.mean(), alpha, rtol=4 / np.sqrt(alpha * N))


def test_symmetric_beta_matches_numpy_beta():
  rng = np.random.default_rng(0)
  for alpha in (0.2, 1.5):
    lam = R.symmetric_beta(alpha, tf.constant([3, 4]), shape=[N]).numpy()
    assert lam.min() >= 0.0 and lam.max() <= 1.0
    assert scipy.stats.ks_2samp(lam, rng.beta(alpha, alpha, N)).pvalue > 1e-3
    # Statistical: the sample variance's relative standard error is sqrt((kurtosis - 1) / N),
    # <= 0.007 for these alphas, so 0.08 is > 10 standard errors.
    np.testing.assert_allclose(lam.var(), 1.0 / (4 * (2 * alpha + 1)), rtol=0.08)
  # Small alpha: compare log-odds (float32 rounds many draws to exactly 1.0).
  alpha = 0.1
  keys = tf.random.experimental.stateless_split(tf.constant([5, 6], tf.int64), 2)
  log_odds = (R.log_gamma([N], alpha, keys[0]) - R.log_gamma([N], alpha, keys[1])).numpy()
  with np.errstate(divide="ignore"):
    reference = np.log(rng.gamma(alpha, size=N)) - np.log(rng.gamma(alpha, size=N))
  assert scipy.stats.ks_2samp(log_odds, reference).pvalue > 1e-3


def test_normal_is_standard_normal():
  z = R.normal([N], tf.constant([9, 9])).numpy()
  assert scipy.stats.kstest(z, "norm").pvalue > 1e-3


def test_same_seed_same_draw_and_xla_agrees():
  seeds = [tf.constant([7, 9]), tf.constant([123456789012, -5], tf.int64)]
  compiled = tf.function(lambda s: R.symmetric_beta(0.2, s, shape=[64]), jit_compile=True)
  for seed in seeds:
    eager = R.symmetric_beta(0.2, seed, shape=[64]).numpy()
    np.testing.assert_array_equal(eager, R.symmetric_beta(0.2, seed, shape=[64]).numpy())
    # XLA vs eager: another kernel for the same float32 transform of the same integer
    # stream; measured max |diff| 4.8e-07 on values in [0, 1] (numerics-matrix rows).
    np.testing.assert_allclose(compiled(seed).numpy(), eager, rtol=1e-5, atol=1e-5)
  other = R.symmetric_beta(0.2, tf.constant([7, 10]), shape=[64]).numpy()
  assert not np.allclose(other, R.symmetric_beta(0.2, seeds[0], shape=[64]).numpy())


def test_bad_arguments():
  with pytest.raises(ValueError, match="alpha"):
    R.log_gamma([2], 0.0, tf.constant([1, 2]))
  with pytest.raises(TypeError, match="seed"):
    R.uniform([2], tf.constant([1.0, 2.0]))
