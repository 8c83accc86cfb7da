"""Behavioural tests of remedis_tf.data.augment (invariants, presets, numpy references)."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.data import augment as A
from remedis_tf.errors import ConfigError

SEED = tf.constant([3, 7], tf.int64)


def _photo(h=48, w=40, seed=0):
  """A smooth random colour image (structure at several scales) in [0, 1]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  base = np.stack([np.sin(6 * xx + 2 * c) * np.cos(4 * yy - c) for c in range(3)], -1)
  return tf.constant(np.clip(0.5 + 0.35 * base + 0.1 * rng.random((h, w, 3)), 0, 1),
                     tf.float32)


def _off(**changes):
  """A config with every random operation disabled except ``changes``."""
  cfg = A.AugmentConfig(image_size=32, crop_area_min=1.0, crop_aspect_min=1.0,
                        crop_aspect_max=1.0, crop_min_object_covered=0.0, flip_lr_prob=0.0,
                        color_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  return dataclasses.replace(cfg, **changes)


@pytest.mark.parametrize("name", sorted(A.PRESETS))
def test_every_preset_gives_valid_distinct_reproducible_views(name):
  cfg = A.get_preset(name, image_size=32)
  image = _photo()
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
  out = A.finetune_augment(_photo(60, 50), cfg, tf.constant([1, 2], tf.int32))
  assert out.shape == (32, 32, 3)
  assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


def test_presets_say_what_they_do():
  cxr = A.PRESETS["cxr"]
  assert cxr.blur_prob == 0.0 and cxr.color_strength == 0.5
  assert cxr.rotation_degrees == 45.0 and cxr.hist_eq_prob == 0.5
  assert cxr.elastic_prob > 0 and cxr.elastic_alpha > 0
  g = A.PRESETS["generic"]
  assert (g.crop_area_min, g.crop_area_max, g.color_strength, g.color_prob,
          g.grayscale_prob, g.blur_prob, g.rotation_degrees) == (0.08, 1.0, 1.0, 0.8, 0.2,
                                                                 0.5, 0.0)
  path = A.PRESETS["pathology"]
  assert path.flip_ud_prob > 0 and path.rot90


def test_cxr_never_blurs_by_behaviour():
  # With the geometry fixed (full-image crop, no flips/rotation) and colour/hist-eq/elastic
  # off, the only remaining random op of cxr would be blur: the view must equal the plain
  # resize for every seed.
  cfg = A.get_preset("cxr", image_size=32, crop_area_min=1.0, crop_aspect_min=1.0,
                     crop_aspect_max=1.0, crop_min_object_covered=0.0, flip_lr_prob=0.0,
                     rotation_degrees=0.0, color_prob=0.0, grayscale_prob=0.0,
                     hist_eq_prob=0.0, elastic_prob=0.0)
  image = _photo(32, 32)
  for s in range(6):
    out = A.augment_view(image, cfg, tf.constant([s, 1]))
    np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-5)
  # Sanity check of the check: the same setup with blur on does change the image.
  blurred = A.augment_view(image, dataclasses.replace(cfg, blur_prob=1.0), SEED)
  assert float(tf.reduce_max(tf.abs(blurred - image))) > 1e-3


def test_get_preset_errors_list_valid_names():
  with pytest.raises(ConfigError, match="generic"):
    A.get_preset("xray")
  with pytest.raises(ConfigError, match="blur_prob"):
    A.get_preset("generic", blurr_prob=0.1)
  assert A.get_preset("derm", image_size=64).image_size == 64


@pytest.mark.parametrize("field,value", [
    ("image_size", 0), ("crop_area_min", 0.0), ("crop_area_min", 1.5), ("flip_lr_prob", 1.2),
    ("blur_sigma_min", -1.0), ("resize_method", "cubic"), ("rotation_degrees", 400.0),
    ("elastic_sigma", 0.0), ("eval_crop_fraction", 0.0), ("color_strength", -1.0),
    ("rotation_fill_mode", "mirror"), ("rot90", 1)])
def test_invalid_fields_name_the_field(field, value):
  with pytest.raises(ConfigError, match=field):
    A.AugmentConfig(**{field: value})


def test_rotation_zero_leaves_geometry_and_ninety_matches_rot90():
  image = _photo(32, 32)
  np.testing.assert_allclose(A.rotate(image, 0.0).numpy(), image.numpy(), atol=1e-6)
  np.testing.assert_allclose(A.rotate(image, math.pi / 2).numpy(),
                             np.rot90(image.numpy(), 1, axes=(0, 1)), atol=1e-4)
  rotated = A.random_rotation(image, _off(rotation_degrees=30.0), SEED)
  assert float(tf.reduce_max(tf.abs(rotated - image))) > 1e-2
  view = A.augment_view(image, _off(rotation_degrees=0.0), SEED)
  np.testing.assert_allclose(view.numpy(), image.numpy(), atol=1e-5)


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


def test_elastic_alpha_zero_is_identity_and_displacement_has_expected_size():
  image = _photo(64, 64)
  same = A.elastic_deform(image, 0.0, 4.0, SEED)
  np.testing.assert_array_equal(same.numpy(), image.numpy())
  # Deform a coordinate ramp: output − input is the displacement (bilinear is exact on it).
  n = 96
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
  ramp = tf.constant(np.stack([yy, xx, xx], -1))
  alpha, sigma = 300.0, 8.0
  out = A.bilinear_sample(ramp, *[tf.constant(a) for a in (yy, xx)])
  np.testing.assert_allclose(out.numpy(), ramp.numpy(), atol=1e-4)
  field = A.displacement_field(n, n, alpha, sigma, SEED).numpy()
  rms = np.sqrt(np.mean(field ** 2))
  expected = alpha / (sigma * math.sqrt(12 * math.pi))  # Simard field's RMS per axis
  assert 0.6 * expected < rms < 1.5 * expected
  deformed = A.elastic_deform(ramp / n, alpha, sigma, SEED).numpy() * n
  inner = slice(12, -12)  # away from the clamped border
  np.testing.assert_allclose(deformed[inner, inner, 0] - yy[inner, inner],
                             field[inner, inner, 0], atol=1e-3)


def test_grayscale_gives_equal_channels():
  out = A.augment_view(_photo(), _off(grayscale_prob=1.0), SEED).numpy()
  np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
  np.testing.assert_allclose(out[..., 1], out[..., 2], atol=1e-6)


def test_blur_matches_numpy_separable_gaussian():
  image = _photo(32, 32).numpy()
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
  image = _photo()
  out = A.color_jitter(image, 1.0, SEED)
  assert float(tf.reduce_max(tf.abs(out - image))) > 1e-2
  assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


def test_flips_and_rot90_are_exact_permutations():
  image = _photo(32, 32)
  cfg = _off(flip_lr_prob=1.0, flip_ud_prob=1.0)
  np.testing.assert_array_equal(A.random_flips(image, cfg, SEED).numpy(),
                                image.numpy()[::-1, ::-1])
  seen = set()
  for s in range(12):
    out = A.random_flips(image, _off(rot90=True), tf.constant([s, 0])).numpy()
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
  full = A.random_resized_crop(ramp, _off(image_size=16), SEED)
  assert float(tf.reduce_max(full) - tf.reduce_min(full)) > 0.9


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


def test_rgb_saturation_equals_tf_hsv_saturation():
  image = _photo()
  for factor in (0.0, 0.4, 1.0, 1.7, 5.0):
    np.testing.assert_allclose(A.adjust_saturation(image, factor).numpy(),
                               tf.image.adjust_saturation(image, factor).numpy(), atol=2e-5)


def test_warped_crop_equals_sequential_rotation_and_elastic():
  """The fused one-resampling geometry matches elastic → rotate → (identity) crop."""
  n = 48
  image = _photo(n, n)
  cfg = _off(image_size=n, rotation_degrees=30.0, elastic_prob=1.0, elastic_alpha=200.0,
             elastic_sigma=6.0)
  angle = 0.3
  inner = slice(10, -10)
  fused = A.warped_crop(image, cfg, angle, 0.0, 1.0, SEED).numpy()
  np.testing.assert_allclose(fused[inner, inner], A.rotate(image, angle).numpy()[inner, inner],
                             atol=1e-4)
  fused = A.warped_crop(image, cfg, 0.0, 200.0, 6.0, SEED).numpy()
  seq = A.elastic_deform(image, 200.0, 6.0, A._sub(SEED, A._OP_ELASTIC)).numpy()
  # Sequential upsamples the field then samples; fused samples the coarse field directly:
  # identical at pixel centres up to float error.
  np.testing.assert_allclose(fused[inner, inner], seq[inner, inner], atol=1e-4)
  for mode in A.FILL_MODES:
    out = A.warped_crop(image, dataclasses.replace(cfg, rotation_fill_mode=mode), 0.7,
                        0.0, 1.0, SEED)
    assert out.shape == (n, n, 3)
    corner = out.numpy()[0, 0]
    assert (np.all(corner == 0.0)) == (mode == "constant")


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
