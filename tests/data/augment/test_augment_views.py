"""View compositions and MixUp of remedis_tf.data.augment.views (invariants, presets,
numpy references)."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from augment_fixtures import SEED, off, photo
from remedis_tf.data import augment as A

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# composed views in float32 against the same ops applied one by one or against numpy: values
# in [0, 1], resizes and colour ops of a few float32 operations per pixel (~1e-6): atol
# 1e-6..1e-5; the affine fit of the plain view is a least-squares statement about bicubic
# resampling (atol 0.02), not rounding.
# Measured: every assert_allclose here used <= 0.083 of its tolerance (>= 12x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 168 comparisons).


@pytest.mark.parametrize("name", sorted(A.PRESETS))
def test_every_preset_gives_valid_distinct_reproducible_views(name):
  cfg = A.get_preset(name, image_size=32)
  image = photo()
  fn = tf.function(lambda x, s: A.augment_view(x, cfg, s))
  v1, v1_again = fn(image, SEED), fn(image, SEED)
  v2 = fn(image, tf.constant([3, 8], tf.int64))
  for v in (v1, v2):
    assert v.shape == (32, 32, 3) and v.dtype == tf.float32
    assert float(tf.reduce_min(v)) >= 0.0 and float(tf.reduce_max(v)) <= 1.0
  np.testing.assert_array_equal(v1.numpy(), v1_again.numpy())
  assert float(tf.reduce_max(tf.abs(v1 - v2))) > 1e-3
  # Eager and graph mode agree (same stateless randomness).
  np.testing.assert_allclose(A.augment_view(image, cfg, SEED).numpy(), v1.numpy(), atol=1e-5)


def test_int32_seed_accepted_and_finetune_view_shape():
  cfg = A.get_preset("cxr", image_size=32)
  out = A.finetune_augment(photo(60, 50), cfg, tf.constant([1, 2], tf.int32))
  assert out.shape == (32, 32, 3)
  assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


def test_cxr_never_blurs_by_behaviour():
  # With the geometry fixed (full-image crop, no flips/rotation) and colour/hist-eq/elastic
  # off, the only remaining random op of cxr would be blur: the view must equal the plain
  # resize for every seed.
  cfg = A.get_preset("cxr", image_size=32, crop_area_min=1.0, crop_aspect_min=1.0,
                     crop_aspect_max=1.0, crop_min_object_covered=0.0, flip_lr_prob=0.0,
                     rotation_degrees=0.0, color_prob=0.0, grayscale_prob=0.0,
                     hist_eq_prob=0.0, elastic_prob=0.0)
  image = photo(32, 32)
  for s in range(6):
    out = A.augment_view(image, cfg, tf.constant([s, 1]))
    np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-5)
  # Sanity check of the check: the same setup with blur on does change the image.
  blurred = A.augment_view(image, dataclasses.replace(cfg, blur_prob=1.0), SEED)
  assert float(tf.reduce_max(tf.abs(blurred - image))) > 1e-3


def test_grayscale_gives_equal_channels():
  out = A.augment_view(photo(), off(grayscale_prob=1.0), SEED).numpy()
  np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
  np.testing.assert_allclose(out[..., 1], out[..., 2], atol=1e-6)


def test_eval_preprocess_centre_crops_like_numpy():
  h, w = 64, 48
  grad = np.stack([np.add.outer(np.arange(h) * 100.0, np.arange(w))] * 3, -1)
  grad = (grad / grad.max()).astype(np.float32)
  side = round(0.875 * min(h, w))  # 42
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  expected = grad[top:top + side, left:left + side]
  out = A.eval_preprocess(tf.constant(grad), side, 0.875).numpy()
  np.testing.assert_allclose(out, expected, atol=1e-5)
  small = A.eval_preprocess(tf.constant(grad), 16, 0.875)
  assert small.shape == (16, 16, 3)
  ref = tf.image.resize(expected, [16, 16], method="bicubic").numpy().clip(0, 1)
  np.testing.assert_allclose(small.numpy(), ref, atol=1e-5)


def test_mixup_matches_numpy():
  rng = np.random.default_rng(0)
  images = rng.random((6, 4, 4, 3)).astype(np.float32)
  labels = np.eye(6, 3, dtype=np.float32)
  mask = (rng.random((6, 3)) > 0.3).astype(np.float32)
  alpha = 0.4
  mixed_x, mixed_y, mixed_m = A.mixup_batch(images, labels, alpha, SEED, mask=mask)
  lam = float(A.sample_mixup_lambda(alpha, SEED))
  assert 0.0 <= lam <= 1.0
  np.testing.assert_allclose(mixed_x, lam * images + (1 - lam) * images[::-1], atol=1e-6)
  np.testing.assert_allclose(mixed_y, lam * labels + (1 - lam) * labels[::-1], atol=1e-6)
  np.testing.assert_array_equal(mixed_m, mask * mask[::-1])
  x2, _ = A.mixup_batch(images, labels, alpha, SEED)
  np.testing.assert_array_equal(x2.numpy(), mixed_x.numpy())
  same_x, same_y = A.mixup_batch(images, labels, 0.0, SEED)
  assert same_x is images and same_y is labels
  # λ ~ Beta(α, α): compare the sample mean/variance with the analytic ones.
  lams = np.array([float(A.sample_mixup_lambda(alpha, tf.constant([i, 5])))
                   for i in range(300)])
  assert abs(lams.mean() - 0.5) < 0.06
  beta_var = 1.0 / (4 * (2 * alpha + 1))
  assert 0.7 * beta_var < lams.var() < 1.3 * beta_var


def _view_displacement_rms(side, cfg, seeds):
  """Per-axis RMS displacement (output-view pixels) that the elastic warp adds to a view.

  The source encodes its own coordinates (y, x, 1 = inside), so a view reads back, per
  output pixel, the source point it sampled. The same seed with α = 0 gives the undeformed
  point (same crop box and rotation); the affine map view → source is fitted to it by least
  squares and its inverse turns source-pixel displacements into view pixels.
  """
  yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
  source = tf.constant(np.stack([yy / (side - 1), xx / (side - 1), np.ones_like(yy)], -1),
                       tf.float32)
  flat = dataclasses.replace(cfg, elastic_alpha=0.0)
  oy, ox = np.mgrid[0:cfg.image_size, 0:cfg.image_size].astype(np.float64)
  squares = []
  for s in seeds:
    seed = tf.constant([s, 11], tf.int64)
    warped = A.augment_view(source, cfg, seed).numpy().astype(np.float64)
    plain = A.augment_view(source, flat, seed).numpy().astype(np.float64)
    coords = plain[..., :2] * (side - 1)
    ok = ((warped[..., 2] > 0.999) & (plain[..., 2] > 0.999)
          & np.all((coords > 1.0) & (coords < side - 2.0), axis=-1))  # off the fill border
    q_warped, q_plain = warped[ok, :2] * (side - 1), coords[ok]
    design = np.stack([oy[ok], ox[ok], np.ones(ok.sum())], 1)
    coef = np.linalg.lstsq(design, q_plain, rcond=None)[0]
    np.testing.assert_allclose(design @ coef, q_plain, atol=0.02)  # the plain view is affine
    disp = np.linalg.solve(coef[:2].T, (q_warped - q_plain).T)
    squares.append(np.mean(disp ** 2))
  return float(np.sqrt(np.mean(squares)))


def test_elastic_warp_in_the_view_does_not_depend_on_source_size():
  """Regression: α was rescaled by k = source/S like σ, so the displacement stayed fixed in
  SOURCE pixels and shrank k× in the view (cxr, 224-px view: RMS 3.5 px from a 224-px
  source, 0.9 px from 896). α must scale by k² (RMS ∝ α/σ)."""
  cfg = A.get_preset("cxr", hist_eq_prob=0.0, color_strength=0.0, grayscale_prob=0.0,
                     flip_lr_prob=0.0, elastic_prob=1.0, crop_area_min=1.0,
                     crop_aspect_min=1.0, crop_aspect_max=1.0, crop_min_object_covered=0.0)
  rms = {side: _view_displacement_rms(side, cfg, range(6)) for side in (160, 224, 448, 896)}
  print("cxr elastic RMS per axis in the 224-px view, full-image crop:", rms)
  expected = cfg.elastic_alpha / (cfg.elastic_sigma * math.sqrt(12 * math.pi))  # 3.26 px
  for side, value in rms.items():
    assert 0.8 * expected < value < 1.3 * expected, (side, value, expected)
    assert abs(value / rms[224] - 1.0) < 0.1, (side, rms)
