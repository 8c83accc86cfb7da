"""Pixel ops of remedis_tf.data.augment.ops against numpy / tf.image references."""

import numpy as np
import pytest
import tensorflow as tf

from augment_fixtures import SEED, photo
from remedis_tf.data import augment as A

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# colour/histogram ops in float32 against numpy float64 or tf.image on values in [0, 1]: a
# few float32 operations per pixel (<= 10u ~ 6e-7): atol 1e-6..2e-5. The constant image is
# equalised to float32(0.3), which is within u*0.3 = 1.8e-8 of 0.3 (assert_allclose's
# default rtol 1e-7 holds exactly, by construction).
# Measured: every assert_allclose here used <= 0.024 of its tolerance (>= 42x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 28 comparisons).


def test_hist_eq_stretches_low_contrast_image_to_full_range():
  rng = np.random.default_rng(1)
  low = tf.constant(0.4 + 0.1 * rng.random((32, 32, 3)), tf.float32)
  out = A.equalize_histogram(low).numpy()
  for c in range(3):
    assert out[..., c].min() == pytest.approx(0.0) and out[..., c].max() == pytest.approx(1.0)
  # Monotone: the ordering of pixel levels is preserved (numpy check on quantised input).
  q = np.round(low.numpy()[..., 0] * 255)
  order = np.argsort(q.ravel(), kind="stable")
  assert np.all(np.diff(out[..., 0].ravel()[order]) >= -1e-7)
  # Matches the textbook CDF mapping computed in numpy.
  values, counts = np.unique(q, return_counts=True)
  cdf = np.cumsum(counts)
  expected = dict(zip(values, (cdf - cdf[0]) / (cdf[-1] - cdf[0])))
  np.testing.assert_allclose(out[..., 0], np.vectorize(expected.get)(q), atol=1e-6)
  constant = tf.fill([8, 8, 3], 0.3)
  np.testing.assert_allclose(A.equalize_histogram(constant).numpy(), 0.3)


def test_blur_matches_numpy_separable_gaussian():
  image = photo(32, 32).numpy()
  sigma, kernel_size = 1.3, 7
  out = A.gaussian_blur(tf.constant(image), sigma, kernel_size).numpy()
  r = kernel_size // 2
  x = np.arange(-r, r + 1)
  k = np.exp(-x ** 2 / (2 * sigma ** 2))
  k /= k.sum()
  padded = np.pad(image, [(r, r), (r, r), (0, 0)], mode="reflect")
  rows = sum(k[i] * padded[i:i + 32] for i in range(kernel_size))
  expected = sum(k[i] * rows[:, i:i + 32] for i in range(kernel_size))
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_color_jitter_changes_colours_but_keeps_range():
  image = photo()
  out = A.color_jitter(image, 1.0, SEED)
  assert float(tf.reduce_max(tf.abs(out - image))) > 1e-2
  assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


def test_rgb_saturation_equals_tf_hsv_saturation():
  image = photo()
  for factor in (0.0, 0.4, 1.0, 1.7, 5.0):
    np.testing.assert_allclose(A.adjust_saturation(image, factor).numpy(),
                               tf.image.adjust_saturation(image, factor).numpy(), atol=2e-5)
