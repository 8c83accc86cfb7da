"""Geometric augmentations: where each output pixel samples the source.

Random resized crop, flips / 90° rotations, the elastic displacement field, and
``warped_crop``, which applies elastic deformation → rotation → crop as ONE bilinear
resampling. Images are float32 ``[H, W, 3]`` in ``[0, 1]``; seeds as in ``ops``. The
unfused rotation and elastic warps that ``warped_crop`` is tested against live in the tests
(``tests/data/augment/augment_reference.py``).
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf

from remedis_tf.data.augment.config import (OP_CROP, OP_ELASTIC, OP_FLIP_LR, OP_FLIP_UD,
                                            OP_ROT90, AugmentConfig)
from remedis_tf.data.augment.ops import as_seed, maybe, resize_clipped, separable_blur, sub_seed


def random_resized_crop(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Inception-style crop (area/aspect/min-covered from ``cfg``) resized to S, clipped."""
  begin, size = _sample_crop_box(image, cfg, seed)
  crop = tf.slice(image, begin, size)
  return resize_clipped(crop, cfg.image_size, cfg.resize_method, cfg.antialias)


def random_flips(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Left-right flip (p flip_lr_prob), up-down flip (p flip_ud_prob), random k·90° (rot90)."""
  seed = as_seed(seed)
  image = maybe(cfg.flip_lr_prob, sub_seed(seed, OP_FLIP_LR), tf.image.flip_left_right, image)
  image = maybe(cfg.flip_ud_prob, sub_seed(seed, OP_FLIP_UD), tf.image.flip_up_down, image)
  if cfg.rot90:
    k = tf.random.stateless_uniform([], sub_seed(seed, OP_ROT90), 0, 4, dtype=tf.int32)
    image = tf.image.rot90(image, k)
  return image


def _sample_crop_box(image: tf.Tensor, cfg: AugmentConfig, seed
                     ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Inception-style crop box ``(begin, size)`` of ``image`` with cfg's area/aspect ranges."""
  bbox = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=bbox, seed=as_seed(seed),
      min_object_covered=cfg.crop_min_object_covered,
      aspect_ratio_range=(cfg.crop_aspect_min, cfg.crop_aspect_max),
      area_range=(cfg.crop_area_min, cfg.crop_area_max), max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  return begin, size


def bilinear_sample(image: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor) -> tf.Tensor:
  """Samples ``image [H,W,C]`` at float pixel coordinates ``ys, xs [h,w]`` → ``[h,w,C]``.

  Coordinates outside the image are clamped to the border (edge replication).
  """
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  ys = tf.clip_by_value(ys, 0.0, tf.cast(h - 1, tf.float32))
  xs = tf.clip_by_value(xs, 0.0, tf.cast(w - 1, tf.float32))
  y0f, x0f = tf.floor(ys), tf.floor(xs)
  wy, wx = (ys - y0f)[..., None], (xs - x0f)[..., None]
  y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)
  y1, x1 = tf.minimum(y0 + 1, h - 1), tf.minimum(x0 + 1, w - 1)
  flat = tf.reshape(image, [h * w, -1])
  corners = tf.gather(flat, tf.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1]))
  top = corners[0] * (1.0 - wx) + corners[1] * wx
  bottom = corners[2] * (1.0 - wx) + corners[3] * wx
  return top * (1.0 - wy) + bottom * wy


def coarse_displacement_field(height, width, alpha, sigma, seed
                              ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Simard displacement field α · (G_σ * U(−1, 1)) of an ``height × width`` image, on a
  grid coarser by f ≈ σ/2 → ``(field [hc, wc, 2] (dy, dx) in full-resolution pixels, f)``.

  For speed the noise is drawn on the coarse grid (so the smoothing kernel stays small),
  smoothed with σ/f and divided by f (which keeps the field's variance equal to the
  full-resolution construction); its bilinear upsampling is the full-resolution field.
  """
  height = tf.convert_to_tensor(height, tf.int32)
  width = tf.convert_to_tensor(width, tf.int32)
  sigma = tf.cast(sigma, tf.float32)
  short = tf.cast(tf.minimum(height, width), tf.float32)
  factor = tf.clip_by_value(sigma / 2.0, 1.0, tf.maximum(short / 16.0, 1.0))
  hc = tf.cast(tf.math.ceil(tf.cast(height, tf.float32) / factor), tf.int32)
  wc = tf.cast(tf.math.ceil(tf.cast(width, tf.float32) / factor), tf.int32)
  noise = tf.random.stateless_uniform(tf.stack([hc, wc, 2]), seed=as_seed(seed),
                                      minval=-1.0, maxval=1.0)
  sigma_c = sigma / factor
  radius = tf.minimum(tf.cast(tf.math.ceil(3.0 * sigma_c), tf.int32),
                      tf.minimum(hc, wc) - 1)
  radius = tf.maximum(radius, 1)
  field = separable_blur(noise, sigma_c, radius) * (tf.cast(alpha, tf.float32) / factor)
  return field, factor


def elastic_params_for_source(shape, cfg: AugmentConfig) -> Tuple[tf.Tensor, tf.Tensor]:
  """``(alpha, sigma)`` in pixels of a source image of ``shape`` ``[H, W, ...]``.

  ``cfg.elastic_alpha/sigma`` are in pixels of the output view (side S); the deformation
  runs on the source before the crop, so both are rescaled by k = (shorter side / S) such
  that the warp seen in the view does not depend on the source size. σ scales by k; the
  displacement α·(G_σ * U) has an RMS ∝ α/σ, so α scales by k² (displacements k× larger
  in source pixels = the same in view pixels).
  """
  scale = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32) / float(cfg.image_size)
  return cfg.elastic_alpha * tf.square(scale), cfg.elastic_sigma * scale


def _fold_coordinate(x: tf.Tensor, n: tf.Tensor, fill_mode: str) -> tf.Tensor:
  """Maps coordinates outside ``[-0.5, n-0.5]`` back inside as ``fill_mode`` says."""
  n = tf.cast(n, tf.float32)
  if fill_mode == "reflect":
    t = tf.math.floormod(x + 0.5, 2.0 * n)
    return tf.where(t < n, t, 2.0 * n - t) - 0.5
  if fill_mode == "wrap":
    return tf.math.floormod(x + 0.5, n) - 0.5
  return x  # "nearest" is the sampler's clamping; "constant" is masked by the caller


def warped_crop(image: tf.Tensor, cfg: AugmentConfig, angle, alpha, sigma, seed) -> tf.Tensor:
  """Elastic deformation → rotation → random resized crop, as ONE bilinear resampling.

  Equivalent to ``crop(rotate(elastic_deform(image, alpha, sigma), angle))`` (the unfused
  reference warps in the tests; same crop box distribution, same displacement field
  (``coarse_displacement_field`` upsampled), same rotation convention) but each output
  pixel is traced back through the three maps and the source is sampled once, which is
  several times faster than warping the full image twice and avoids compounding
  interpolation blur. ``alpha``/``sigma`` in pixels of ``image``; ``alpha = 0`` skips the
  deformation. Returns ``[S, S, 3]`` in [0, 1].
  """
  seed = as_seed(seed)
  size_out = cfg.image_size
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  begin, size = _sample_crop_box(image, cfg, sub_seed(seed, OP_CROP))
  begin, size = tf.cast(begin, tf.float32), tf.cast(size, tf.float32)
  # Output pixel o → crop-box point c = a·o + b (half-pixel convention of tf.image.resize)
  # → point q = R(c − centre) + centre of the deformed image (rotation about
  # the image centre, positive = counter-clockwise as displayed). Both maps
  # are affine, so q(o) is one affine transform: [a0, a1, a2, b0, b1, b2] with
  # q_x = a0·x + a1·y + a2, q_y = b0·x + b1·y + b2.
  ax, ay = size[1] / size_out, size[0] / size_out
  bx, by = begin[1] + 0.5 * ax - 0.5, begin[0] + 0.5 * ay - 0.5
  angle = tf.cast(angle, tf.float32)
  cos, sin = tf.cos(angle), tf.sin(angle)
  ox, oy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
  a = tf.stack([cos * ax, -sin * ay, cos * (bx - ox) - sin * (by - oy) + ox])
  b = tf.stack([sin * ax, cos * ay, sin * (bx - ox) + cos * (by - oy) + oy])
  out_hw = tf.constant([size_out, size_out], tf.int32)

  def affine_sample(source, row_x, row_y, fill_mode):
    transform = tf.concat([row_x, row_y, tf.zeros([2])], 0)[None]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=source[None], transforms=transform, output_shape=out_hw, fill_value=0.0,
        interpolation="BILINEAR", fill_mode=fill_mode.upper())[0]

  deform = cfg.elastic_alpha > 0 and cfg.elastic_prob > 0
  if not deform:
    out = affine_sample(image, a, b, cfg.rotation_fill_mode)
  else:
    coarse, _ = coarse_displacement_field(shape[0], shape[1], alpha, sigma,
                                          sub_seed(seed, OP_ELASTIC))
    # The full-resolution field is the bilinear upsampling of the coarse one, so d(q) is
    # the coarse field sampled at k·q + (k − 1)/2 — again affine in o.
    kx = tf.cast(tf.shape(coarse)[1], tf.float32) / w
    ky = tf.cast(tf.shape(coarse)[0], tf.float32) / h
    shift = tf.constant([0.0, 0.0, 1.0])
    d = affine_sample(coarse, kx * a + 0.5 * (kx - 1.0) * shift,
                      ky * b + 0.5 * (ky - 1.0) * shift, "nearest")
    x, y = tf.meshgrid(tf.range(size_out, dtype=tf.float32),
                       tf.range(size_out, dtype=tf.float32))
    qx, qy = a[0] * x + a[1] * y + a[2], b[0] * x + b[1] * y + b[2]
    inside = None
    if cfg.rotation_fill_mode == "constant":
      inside = (qy >= -0.5) & (qy <= h - 0.5) & (qx >= -0.5) & (qx <= w - 0.5)
    else:
      qy = _fold_coordinate(qy, shape[0], cfg.rotation_fill_mode)
      qx = _fold_coordinate(qx, shape[1], cfg.rotation_fill_mode)
    out = bilinear_sample(image, qy + d[..., 0], qx + d[..., 1])
    if inside is not None:
      out = out * tf.cast(inside, tf.float32)[..., None]
  out = tf.clip_by_value(out, 0.0, 1.0)
  out.set_shape([size_out, size_out, 3])
  return out
