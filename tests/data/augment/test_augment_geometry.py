"""Geometric ops of remedis_tf.data.augment.geometry (crop, flips, elastic field, the fused
warped_crop against the unfused reference warps)."""

import pytest
import dataclasses
import math

import numpy as np
import tensorflow as tf

import augment_reference as R
from augment_fixtures import SEED, off, photo
from remedis_tf.data import augment as A
from remedis_tf.data.augment import config, ops

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# geometry ops in float32 against numpy float64 or against each other (rotation by 0 / 90
# degrees, identity views, fused vs sequential warps): bilinear interpolation of values in
# [0, 1] is a few float32 operations per pixel (<= 10u ~ 6e-7), and coordinates computed
# through sin/cos of the angle add ~1e-6 pixel; atol 1e-6..1e-4 (1e-3 for the elastic field
# read back through a second interpolation).
# Measured: every assert_allclose here used <= 0.018 of its tolerance (>= 55x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 28 comparisons).


def test_rotation_zero_leaves_geometry_and_ninety_matches_rot90():
  image = photo(32, 32)
  np.testing.assert_allclose(R.rotate(image, 0.0).numpy(), image.numpy(), atol=1e-6)
  np.testing.assert_allclose(R.rotate(image, math.pi / 2).numpy(),
                             np.rot90(image.numpy(), 1, axes=(0, 1)), atol=1e-4)
  rotated = R.random_rotation(image, off(rotation_degrees=30.0), SEED)
  assert float(tf.reduce_max(tf.abs(rotated - image))) > 1e-2
  view = A.augment_view(image, off(rotation_degrees=0.0), SEED)
  np.testing.assert_allclose(view.numpy(), image.numpy(), atol=1e-5)


def test_elastic_alpha_zero_is_identity_and_displacement_has_expected_size():
  image = photo(64, 64)
  same = R.elastic_deform(image, 0.0, 4.0, SEED)
  np.testing.assert_array_equal(same.numpy(), image.numpy())
  # Deform a coordinate ramp: output − input is the displacement (bilinear is exact on it).
  n = 96
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
  ramp = tf.constant(np.stack([yy, xx, xx], -1))
  alpha, sigma = 300.0, 8.0
  out = A.bilinear_sample(ramp, *[tf.constant(a) for a in (yy, xx)])
  np.testing.assert_allclose(out.numpy(), ramp.numpy(), atol=1e-4)
  field = R.displacement_field(n, n, alpha, sigma, SEED).numpy()
  rms = np.sqrt(np.mean(field ** 2))
  expected = alpha / (sigma * math.sqrt(12 * math.pi))  # Simard field's RMS per axis
  assert 0.6 * expected < rms < 1.5 * expected
  deformed = R.elastic_deform(ramp / n, alpha, sigma, SEED).numpy() * n
  inner = slice(12, -12)  # away from the clamped border
  np.testing.assert_allclose(deformed[inner, inner, 0] - yy[inner, inner],
                             field[inner, inner, 0], atol=1e-3)


def test_flips_and_rot90_are_exact_permutations():
  image = photo(32, 32)
  cfg = off(flip_lr_prob=1.0, flip_ud_prob=1.0)
  np.testing.assert_array_equal(A.random_flips(image, cfg, SEED).numpy(),
                                image.numpy()[::-1, ::-1])
  seen = set()
  for s in range(12):
    out = A.random_flips(image, off(rot90=True), tf.constant([s, 0])).numpy()
    k = [k for k in range(4) if np.array_equal(out, np.rot90(image.numpy(), k))]
    assert len(k) == 1
    seen.add(k[0])
  assert len(seen) >= 3


def test_random_resized_crop_covers_area_range():
  # A ramp image: the crop's value range reveals its extent.
  n = 64
  ramp = tf.constant(np.tile(np.linspace(0, 1, n, dtype=np.float32)[None, :, None],
                             [n, 1, 3]))
  cfg = A.AugmentConfig(image_size=16, crop_area_min=0.1, crop_area_max=0.3)
  spans = [float(tf.reduce_max(v) - tf.reduce_min(v)) for v in
           (A.random_resized_crop(ramp, cfg, tf.constant([s, 0])) for s in range(8))]
  assert all(s < 0.75 for s in spans)  # never the whole width
  full = A.random_resized_crop(ramp, off(image_size=16), SEED)
  assert float(tf.reduce_max(full) - tf.reduce_min(full)) > 0.9


def test_warped_crop_equals_sequential_rotation_and_elastic():
  """The fused one-resampling geometry matches elastic → rotate → (identity) crop."""
  n = 48
  image = photo(n, n)
  cfg = off(image_size=n, rotation_degrees=30.0, elastic_prob=1.0, elastic_alpha=200.0,
            elastic_sigma=6.0)
  angle = 0.3
  inner = slice(10, -10)
  fused = A.warped_crop(image, cfg, angle, 0.0, 1.0, SEED).numpy()
  np.testing.assert_allclose(fused[inner, inner], R.rotate(image, angle).numpy()[inner, inner],
                             atol=1e-4)
  fused = A.warped_crop(image, cfg, 0.0, 200.0, 6.0, SEED).numpy()
  seq = R.elastic_deform(image, 200.0, 6.0, ops.sub_seed(SEED, config.OP_ELASTIC)).numpy()
  # Sequential upsamples the field then samples; fused samples the coarse field directly:
  # identical at pixel centres up to float error.
  np.testing.assert_allclose(fused[inner, inner], seq[inner, inner], atol=1e-4)
  for mode in A.FILL_MODES:
    out = A.warped_crop(image, dataclasses.replace(cfg, rotation_fill_mode=mode), 0.7,
                        0.0, 1.0, SEED)
    assert out.shape == (n, n, 3)
    corner = out.numpy()[0, 0]
    assert (np.all(corner == 0.0)) == (mode == "constant")
