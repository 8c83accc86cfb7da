"""Pixel-value augmentations (colour, grayscale, blur, histogram equalisation) and the
stateless-seed helpers every augmentation module shares.

Every op takes one float32 image ``[H, W, C]`` with values in ``[0, 1]`` and returns the same
shape and range. Randomness comes only from STATELESS random ops driven by an explicit
``seed`` (int32/int64 tensor of shape ``[2]``), so an op's output is a pure function of its
arguments.
"""

from __future__ import annotations

import tensorflow as tf

from remedis_tf.data.augment.config import AugmentConfig

# SimCLR's relative jitter strengths (multiplied by the colour strength s).
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0.8, 0.8, 0.8, 0.2


# ------------------------------------------------------------------------ seed helpers


def as_seed(seed) -> tf.Tensor:
  """``seed`` as an int64 ``[2]`` tensor; TypeError for any other integer width/dtype."""
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64):
    raise TypeError(f"seed must be an int32/int64 [2] tensor, got {seed.dtype}")
  return tf.cast(seed, tf.int64)


def sub_seed(seed: tf.Tensor, op: int) -> tf.Tensor:
  """The independent stream of operation ``op`` (an ``config.OP_*`` id) under ``seed``."""
  return tf.random.experimental.stateless_fold_in(seed, op)


def uniform(seed, minval=0.0, maxval=1.0, shape=()) -> tf.Tensor:
  return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


def maybe(prob: float, seed, fn, image: tf.Tensor) -> tf.Tensor:
  """``fn(image)`` with probability ``prob`` (decided by ``seed``), else ``image``."""
  if prob <= 0.0:
    return image
  if prob >= 1.0:
    return fn(image)
  return tf.cond(uniform(seed) < prob, lambda: fn(image), lambda: image)


# ------------------------------------------------------------------ shared resampling


def _gaussian_kernel(sigma: tf.Tensor, radius: tf.Tensor) -> tf.Tensor:
  x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  w = tf.exp(-tf.square(x) / (2.0 * tf.square(tf.cast(sigma, tf.float32))))
  return w / tf.reduce_sum(w)


def separable_blur(image: tf.Tensor, sigma, radius) -> tf.Tensor:
  """Gaussian blur of ``[H, W, C]`` with reflect padding of ``radius`` (not clipped)."""
  channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
  kernel = _gaussian_kernel(sigma, radius)
  k_h = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
  k_w = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
  x = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
  x = tf.nn.depthwise_conv2d(x, k_h, [1, 1, 1, 1], "VALID")
  x = tf.nn.depthwise_conv2d(x, k_w, [1, 1, 1, 1], "VALID")
  return x[0]


def resize_clipped(image: tf.Tensor, size: int, method: str, antialias: bool) -> tf.Tensor:
  """``image`` resized to ``[size, size]`` and clipped to [0, 1]."""
  out = tf.image.resize(image, [size, size], method=method, antialias=antialias)
  return tf.clip_by_value(out, 0.0, 1.0)


# ------------------------------------------------------------------------ pixel ops


def to_grayscale(image: tf.Tensor) -> tf.Tensor:
  """Luma (ITU-R 601, as ``tf.image.rgb_to_grayscale``) replicated to 3 channels."""
  luma = image[..., 0:1] * 0.2989 + image[..., 1:2] * 0.5870 + image[..., 2:3] * 0.1140
  return tf.tile(luma, [1, 1, 3])


def adjust_saturation(image: tf.Tensor, factor) -> tf.Tensor:
  """HSV saturation × ``factor`` (clipped to [0, 1]) computed directly in RGB.

  With hue and value fixed every channel is affine in the saturation, so
  c' = max − k·(max − c) with k = min(factor, max / (max − min)); this equals
  ``tf.image.adjust_saturation`` and avoids the HSV round trip.
  """
  top = tf.reduce_max(image, axis=-1, keepdims=True)
  bottom = tf.reduce_min(image, axis=-1, keepdims=True)
  spread = top - bottom
  k = tf.minimum(tf.cast(factor, image.dtype), top / tf.maximum(spread, 1e-12))
  return top - k * (top - image)


def color_jitter(image: tf.Tensor, strength: float, seed) -> tf.Tensor:
  """SimCLR jitter: brightness (×U(1−0.8s, 1+0.8s)), contrast, saturation, hue.

  The four run in a random order (a stateless permutation), each followed by a clip.
  """
  seed = as_seed(seed)
  keys = tf.random.experimental.stateless_split(seed, 5)
  b, c, s, h = (_BRIGHTNESS * strength, _CONTRAST * strength, _SATURATION * strength,
                _HUE * strength)
  f_b = uniform(keys[0], max(0.0, 1.0 - b), 1.0 + b)
  f_c = uniform(keys[1], max(0.0, 1.0 - c), 1.0 + c)
  f_s = uniform(keys[2], max(0.0, 1.0 - s), 1.0 + s)
  f_h = uniform(keys[3], -h, h)
  branches = [
      lambda x: x * f_b,
      lambda x: tf.image.adjust_contrast(x, f_c),
      lambda x: adjust_saturation(x, f_s),
      lambda x: tf.image.adjust_hue(x, f_h),
  ]
  order = tf.random.experimental.stateless_shuffle(tf.range(4), seed=keys[4])
  for i in range(4):
    image = tf.switch_case(order[i], [lambda f=f: f(image) for f in branches])
    image = tf.clip_by_value(image, 0.0, 1.0)
  return image


def gaussian_blur(image: tf.Tensor, sigma, kernel_size: int) -> tf.Tensor:
  """Separable Gaussian blur of σ pixels, kernel ``2·(kernel_size//2)+1``, reflect edges."""
  radius = max(1, kernel_size // 2)
  return tf.clip_by_value(separable_blur(image, sigma, radius), 0.0, 1.0)


def random_blur(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Gaussian blur with σ ~ U(blur_sigma_min, blur_sigma_max), kernel ≈ S·fraction.

  The kernel is truncated at ⌈3σ⌉ when that is smaller than S·fraction/2 (weights beyond 3σ
  are < 1.2% of the centre weight), which makes the common small-σ blurs much cheaper.
  """
  sigma = uniform(as_seed(seed), cfg.blur_sigma_min, cfg.blur_sigma_max)
  max_radius = max(1, int(cfg.image_size * cfg.blur_kernel_fraction) // 2)
  radius = tf.clip_by_value(tf.cast(tf.math.ceil(3.0 * sigma), tf.int32), 1, max_radius)
  return tf.clip_by_value(separable_blur(image, sigma, radius), 0.0, 1.0)


def equalize_histogram(image: tf.Tensor, bins: int = 256) -> tf.Tensor:
  """Per-channel histogram equalisation on ``bins`` levels; output spans [0, 1].

  Each channel's levels are mapped through its normalised CDF so that the darkest level
  present becomes 0 and the brightest 1. Constant channels are returned unchanged.
  """
  q = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * (bins - 1)), tf.int32)
  offsets = tf.range(3, dtype=tf.int32) * bins
  flat = tf.reshape(q + offsets, [-1])
  hist = tf.reshape(tf.math.bincount(flat, minlength=3 * bins, maxlength=3 * bins,
                                     dtype=tf.float32), [3, bins])
  cdf = tf.cumsum(hist, axis=1)
  total = cdf[:, -1:]
  cdf_min = tf.reduce_min(tf.where(hist > 0, cdf, total), axis=1, keepdims=True)
  denom = total - cdf_min
  lut = tf.clip_by_value((cdf - cdf_min) / tf.maximum(denom, 1.0), 0.0, 1.0)
  out = tf.gather(tf.reshape(lut, [-1]), q + offsets)
  constant = tf.reshape(denom <= 0.0, [3])
  return tf.where(constant, image, out)
