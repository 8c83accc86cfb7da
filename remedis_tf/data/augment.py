"""Image augmentations for contrastive pretraining and fine-tuning, and their presets.

Every function takes one float32 image ``[H, W, 3]`` with values in ``[0, 1]`` and returns
the same layout and range. Randomness comes only from STATELESS random ops driven by an
explicit ``seed`` (int32/int64 tensor of shape ``[2]``), so a view is a pure function of
(image, config, seed): the input pipeline can regenerate any example at any position
regardless of how many replicas read it. Each random choice inside a view uses its own
sub-seed ``fold_in(seed, OP_ID)``, so switching one operation on or off does not change
the randomness of the others.

Order of a contrastive view (REMEDIS, DESIGN.md §3):
histogram equalisation → elastic deformation → rotation → random resized crop →
flips / 90° rotations → colour jitter + grayscale → Gaussian blur.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Tuple, Union

import tensorflow as tf

from remedis_tf import stateless_random
from remedis_tf.errors import ConfigError

RESIZE_METHODS = ("bicubic", "bilinear", "area", "lanczos3", "nearest")
FILL_MODES = ("constant", "reflect", "nearest", "wrap")
# Centre-crop fraction of evaluation images (Inception/BiT convention); a run's own value
# is AugmentConfig.eval_crop_fraction, recorded in its config.json.
EVAL_CROP_FRACTION = 0.875

# Sub-seed ids (never renumber: that would change every stored run's augmentations).
_OP_HIST_EQ, _OP_ELASTIC, _OP_ROTATE, _OP_CROP = 1, 2, 3, 4
_OP_FLIP_LR, _OP_FLIP_UD, _OP_ROT90, _OP_COLOR = 5, 6, 7, 8
_OP_GRAY, _OP_BLUR = 9, 10

# SimCLR's relative jitter strengths (multiplied by the colour strength s).
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0.8, 0.8, 0.8, 0.2


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Every augmentation knob. Defaults = SimCLR-v2 / REMEDIS generic (DESIGN.md §3).

  Attributes:
    image_size: output side S in pixels (views are ``[S, S, 3]``).
    crop_area_min, crop_area_max: range of the crop's area as a fraction of the image.
    crop_aspect_min, crop_aspect_max: range of the crop's width/height ratio.
    crop_min_object_covered: minimum fraction of the image the crop must cover.
    resize_method: interpolation used to resize crops to S (one of RESIZE_METHODS).
    antialias: low-pass filter when downscaling (slower; SimCLR does not).
    flip_lr_prob, flip_ud_prob: probabilities of a horizontal / vertical flip.
    rot90: rotate by a uniformly random multiple of 90° (after the crop).
    color_strength: SimCLR colour strength s (brightness/contrast/saturation 0.8·s,
      hue 0.2·s).
    color_prob: probability of applying the colour jitter.
    grayscale_prob: probability of converting to grayscale (channels made equal).
    blur_prob: probability of the Gaussian blur.
    blur_sigma_min, blur_sigma_max: blur σ range in output pixels.
    blur_kernel_fraction: blur kernel side as a fraction of S (SimCLR: 1/10).
    rotation_degrees: rotate by an angle ~ U(−r, r) degrees (0 = off).
    rotation_fill_mode: how pixels rotated in from outside are filled (FILL_MODES;
      "constant" fills with black).
    hist_eq_prob: probability of per-channel histogram equalisation.
    elastic_prob: probability of the elastic deformation.
    elastic_alpha: displacement scale α (Simard et al. 2003 convention: the smoothed
      U(−1, 1) field is multiplied by α), in pixels at resolution S.
    elastic_sigma: Gaussian smoothing σ of the displacement field, pixels at resolution S.
      Elastic deformation runs before the crop, on the decoded image, so σ is rescaled by
      k = (shorter input side / S) and α by k² (``elastic_params_for_source``): the warp in
      the view is the same at any source size. RMS displacement ≈ α / (σ·√(12π)) pixels
      per axis (view pixels, full-image crop; smaller crops magnify it).
    eval_crop_fraction: evaluation centre-crop side as a fraction of the shorter side.
  """
  image_size: int = 224
  crop_area_min: float = 0.08
  crop_area_max: float = 1.0
  crop_aspect_min: float = 3.0 / 4.0
  crop_aspect_max: float = 4.0 / 3.0
  crop_min_object_covered: float = 0.1
  resize_method: str = "bicubic"
  antialias: bool = False
  flip_lr_prob: float = 0.5
  flip_ud_prob: float = 0.0
  rot90: bool = False
  color_strength: float = 1.0
  color_prob: float = 0.8
  grayscale_prob: float = 0.2
  blur_prob: float = 0.5
  blur_sigma_min: float = 0.1
  blur_sigma_max: float = 2.0
  blur_kernel_fraction: float = 0.1
  rotation_degrees: float = 0.0
  rotation_fill_mode: str = "constant"
  hist_eq_prob: float = 0.0
  elastic_prob: float = 0.0
  elastic_alpha: float = 0.0
  elastic_sigma: float = 16.0
  eval_crop_fraction: float = EVAL_CROP_FRACTION

  def __post_init__(self):
    _validate(self)


def _fail(field: str, value, why: str):
  raise ConfigError(f"AugmentConfig.{field}={value!r}: {why}")


def _validate(cfg: AugmentConfig) -> None:
  """Raises ConfigError naming the first invalid field."""
  if not isinstance(cfg.image_size, int) or isinstance(cfg.image_size, bool) or (
      cfg.image_size < 8):
    _fail("image_size", cfg.image_size, "must be an integer >= 8")
  for name in ("flip_lr_prob", "flip_ud_prob", "color_prob", "grayscale_prob", "blur_prob",
               "hist_eq_prob", "elastic_prob", "crop_min_object_covered"):
    value = getattr(cfg, name)
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
      _fail(name, value, "must be in [0, 1]")
  if not 0.0 < cfg.crop_area_min <= cfg.crop_area_max <= 1.0:
    _fail("crop_area_min", cfg.crop_area_min,
          f"need 0 < crop_area_min <= crop_area_max ({cfg.crop_area_max}) <= 1")
  if not 0.0 < cfg.crop_aspect_min <= cfg.crop_aspect_max:
    _fail("crop_aspect_min", cfg.crop_aspect_min,
          f"need 0 < crop_aspect_min <= crop_aspect_max ({cfg.crop_aspect_max})")
  if cfg.resize_method not in RESIZE_METHODS:
    _fail("resize_method", cfg.resize_method, f"must be one of {RESIZE_METHODS}")
  if cfg.rotation_fill_mode not in FILL_MODES:
    _fail("rotation_fill_mode", cfg.rotation_fill_mode, f"must be one of {FILL_MODES}")
  if not 0.0 <= cfg.color_strength <= 2.5:
    _fail("color_strength", cfg.color_strength, "must be in [0, 2.5] (hue shift 0.2·s <= 0.5)")
  if not 0.0 < cfg.blur_sigma_min <= cfg.blur_sigma_max:
    _fail("blur_sigma_min", cfg.blur_sigma_min,
          f"need 0 < blur_sigma_min <= blur_sigma_max ({cfg.blur_sigma_max})")
  if not 0.0 < cfg.blur_kernel_fraction <= 0.5:
    _fail("blur_kernel_fraction", cfg.blur_kernel_fraction, "must be in (0, 0.5]")
  if not 0.0 <= cfg.rotation_degrees <= 180.0:
    _fail("rotation_degrees", cfg.rotation_degrees, "must be in [0, 180]")
  if cfg.elastic_alpha < 0.0:
    _fail("elastic_alpha", cfg.elastic_alpha, "must be >= 0")
  if cfg.elastic_sigma <= 0.0:
    _fail("elastic_sigma", cfg.elastic_sigma, "must be > 0")
  if not 0.0 < cfg.eval_crop_fraction <= 1.0:
    _fail("eval_crop_fraction", cfg.eval_crop_fraction, "must be in (0, 1]")
  for name in ("rot90", "antialias"):
    if not isinstance(getattr(cfg, name), bool):
      _fail(name, getattr(cfg, name), "must be true or false")


# Presets: see docs/augmentations.md for the reasoning and the assumptions behind each.
PRESETS: Dict[str, AugmentConfig] = {
    # SimCLR-v2 / REMEDIS code defaults.
    "generic": AugmentConfig(),
    # Chest X-ray: grayscale modality; blur hides subtle findings; the medical extras on.
    "cxr": AugmentConfig(color_strength=0.5, blur_prob=0.0, rotation_degrees=45.0,
                         hist_eq_prob=0.5, elastic_prob=0.5, elastic_alpha=400.0,
                         elastic_sigma=20.0),
    # Dermatology photos: colour matters diagnostically, so weaker colour jitter; no
    # canonical orientation, hence both flips and rotations.
    "derm": AugmentConfig(color_strength=0.5, flip_ud_prob=0.5, rotation_degrees=30.0,
                          rotation_fill_mode="reflect"),
    # Fundus: keep the whole disc (milder crops), weak colour, small rotations; left/right
    # flips map one eye to the other, which is acceptable for DME.
    "fundus": AugmentConfig(crop_area_min=0.25, color_strength=0.5, rotation_degrees=15.0),
    # Pathology patches: no canonical orientation at all (D4 symmetry); stain variation is
    # what colour jitter emulates, so keep s = 1.
    "pathology": AugmentConfig(flip_ud_prob=0.5, rot90=True),
    # Mammography: grayscale, high resolution, tiny findings: milder crops, no blur, weak
    # intensity jitter, small rotations, histogram equalisation for vendor differences.
    "mammo": AugmentConfig(crop_area_min=0.25, color_strength=0.5, blur_prob=0.0,
                           flip_ud_prob=0.5, rotation_degrees=15.0, hist_eq_prob=0.5),
}


def get_preset(name: str, **overrides) -> AugmentConfig:
  """Preset ``name`` with fields replaced by ``overrides`` (validated).

  Raises ConfigError for an unknown preset (listing PRESETS) or an unknown field (listing
  the valid ones).
  """
  if name not in PRESETS:
    raise ConfigError(f"unknown augmentation preset {name!r}; valid: {sorted(PRESETS)}")
  fields = [f.name for f in dataclasses.fields(AugmentConfig)]
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"unknown AugmentConfig field(s) {unknown}; valid: {fields}")
  return dataclasses.replace(PRESETS[name], **overrides)


# ----------------------------------------------------------------------------- helpers


def _seed(seed) -> tf.Tensor:
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64):
    raise TypeError(f"seed must be an int32/int64 [2] tensor, got {seed.dtype}")
  return tf.cast(seed, tf.int64)


def _sub(seed: tf.Tensor, op: int) -> tf.Tensor:
  return tf.random.experimental.stateless_fold_in(seed, op)


def _uniform(seed, minval=0.0, maxval=1.0, shape=()) -> tf.Tensor:
  return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


def _maybe(prob: float, seed, fn, image: tf.Tensor) -> tf.Tensor:
  """``fn(image)`` with probability ``prob`` (decided by ``seed``), else ``image``."""
  if prob <= 0.0:
    return image
  if prob >= 1.0:
    return fn(image)
  return tf.cond(_uniform(seed) < prob, lambda: fn(image), lambda: image)


def _gaussian_kernel(sigma: tf.Tensor, radius: tf.Tensor) -> tf.Tensor:
  x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  w = tf.exp(-tf.square(x) / (2.0 * tf.square(tf.cast(sigma, tf.float32))))
  return w / tf.reduce_sum(w)


def _separable_blur(image: tf.Tensor, sigma, radius) -> tf.Tensor:
  """Gaussian blur of ``[H, W, C]`` with reflect padding of ``radius``."""
  channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
  kernel = _gaussian_kernel(sigma, radius)
  k_h = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
  k_w = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
  x = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
  x = tf.nn.depthwise_conv2d(x, k_h, [1, 1, 1, 1], "VALID")
  x = tf.nn.depthwise_conv2d(x, k_w, [1, 1, 1, 1], "VALID")
  return x[0]


def _resize(image: tf.Tensor, size: int, method: str, antialias: bool) -> tf.Tensor:
  out = tf.image.resize(image, [size, size], method=method, antialias=antialias)
  return tf.clip_by_value(out, 0.0, 1.0)


# --------------------------------------------------------------------- single operations


def random_resized_crop(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Inception-style crop (area/aspect/min-covered from ``cfg``) resized to S, clipped."""
  begin, size = _sample_crop_box(image, cfg, seed)
  crop = tf.slice(image, begin, size)
  return _resize(crop, cfg.image_size, cfg.resize_method, cfg.antialias)


def random_flips(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Left-right flip (p flip_lr_prob), up-down flip (p flip_ud_prob), random k·90° (rot90)."""
  seed = _seed(seed)
  image = _maybe(cfg.flip_lr_prob, _sub(seed, _OP_FLIP_LR), tf.image.flip_left_right, image)
  image = _maybe(cfg.flip_ud_prob, _sub(seed, _OP_FLIP_UD), tf.image.flip_up_down, image)
  if cfg.rot90:
    k = tf.random.stateless_uniform([], _sub(seed, _OP_ROT90), 0, 4, dtype=tf.int32)
    image = tf.image.rot90(image, k)
  return image


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
  seed = _seed(seed)
  keys = tf.random.experimental.stateless_split(seed, 5)
  b, c, s, h = (_BRIGHTNESS * strength, _CONTRAST * strength, _SATURATION * strength,
                _HUE * strength)
  f_b = _uniform(keys[0], max(0.0, 1.0 - b), 1.0 + b)
  f_c = _uniform(keys[1], max(0.0, 1.0 - c), 1.0 + c)
  f_s = _uniform(keys[2], max(0.0, 1.0 - s), 1.0 + s)
  f_h = _uniform(keys[3], -h, h)
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
  return tf.clip_by_value(_separable_blur(image, sigma, radius), 0.0, 1.0)


def random_blur(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Gaussian blur with σ ~ U(blur_sigma_min, blur_sigma_max), kernel ≈ S·fraction.

  The kernel is truncated at ⌈3σ⌉ when that is smaller than S·fraction/2 (weights beyond 3σ
  are < 1.2% of the centre weight), which makes the common small-σ blurs much cheaper.
  """
  sigma = _uniform(_seed(seed), cfg.blur_sigma_min, cfg.blur_sigma_max)
  max_radius = max(1, int(cfg.image_size * cfg.blur_kernel_fraction) // 2)
  radius = tf.clip_by_value(tf.cast(tf.math.ceil(3.0 * sigma), tf.int32), 1, max_radius)
  return tf.clip_by_value(_separable_blur(image, sigma, radius), 0.0, 1.0)


def rotate(image: tf.Tensor, angle, fill_mode: str = "constant") -> tf.Tensor:
  """Rotates by ``angle`` radians about the image centre (bilinear, same size).

  Positive angles turn the content counter-clockwise as displayed (row 0 at the top).
  """
  angle = tf.cast(angle, tf.float32)
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  # The op maps each OUTPUT pixel (x, y) to the input point it samples.
  transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                        sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=shape[:2],
      fill_value=0.0, interpolation="BILINEAR", fill_mode=fill_mode.upper())
  return tf.clip_by_value(out[0], 0.0, 1.0)


def random_rotation(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Rotation by U(−rotation_degrees, rotation_degrees)."""
  limit = math.radians(cfg.rotation_degrees)
  return rotate(image, _uniform(_seed(seed), -limit, limit), cfg.rotation_fill_mode)


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


def _coarse_field(height, width, alpha, sigma, seed) -> Tuple[tf.Tensor, tf.Tensor]:
  """Displacement field on a grid coarser by f ≈ σ/2 → (field [hc, wc, 2], f)."""
  height = tf.convert_to_tensor(height, tf.int32)
  width = tf.convert_to_tensor(width, tf.int32)
  sigma = tf.cast(sigma, tf.float32)
  short = tf.cast(tf.minimum(height, width), tf.float32)
  factor = tf.clip_by_value(sigma / 2.0, 1.0, tf.maximum(short / 16.0, 1.0))
  hc = tf.cast(tf.math.ceil(tf.cast(height, tf.float32) / factor), tf.int32)
  wc = tf.cast(tf.math.ceil(tf.cast(width, tf.float32) / factor), tf.int32)
  noise = tf.random.stateless_uniform(tf.stack([hc, wc, 2]), seed=_seed(seed),
                                      minval=-1.0, maxval=1.0)
  sigma_c = sigma / factor
  radius = tf.minimum(tf.cast(tf.math.ceil(3.0 * sigma_c), tf.int32),
                      tf.minimum(hc, wc) - 1)
  radius = tf.maximum(radius, 1)
  field = _separable_blur(noise, sigma_c, radius) * (tf.cast(alpha, tf.float32) / factor)
  return field, factor


def displacement_field(height, width, alpha, sigma, seed) -> tf.Tensor:
  """Simard displacement field ``[H, W, 2]`` (dy, dx) in pixels: α · (G_σ * U(−1, 1)).

  For speed the noise is drawn on a grid coarser by f ≈ σ/2 (so the smoothing kernel stays
  small), smoothed with σ/f, divided by f (which keeps the field's variance equal to the
  full-resolution construction) and bilinearly upsampled.
  """
  field, _ = _coarse_field(height, width, alpha, sigma, seed)
  return tf.image.resize(field, tf.stack([height, width]), method="bilinear")


def elastic_deform(image: tf.Tensor, alpha, sigma, seed) -> tf.Tensor:
  """Elastic deformation: resample ``image`` at (y + dy, x + dx) (bilinear, edge clamp).

  ``alpha`` and ``sigma`` are in pixels of THIS image (see ``displacement_field``).
  α = 0 returns the image exactly.
  """
  shape = tf.shape(image)
  field = displacement_field(shape[0], shape[1], alpha, sigma, seed)
  ys, xs = tf.meshgrid(tf.range(shape[0], dtype=tf.float32),
                       tf.range(shape[1], dtype=tf.float32), indexing="ij")
  return bilinear_sample(image, ys + field[..., 0], xs + field[..., 1])


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


def random_elastic(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Elastic deformation with ``cfg.elastic_alpha/sigma`` (output-view pixels) rescaled to
  this image's size (``elastic_params_for_source``)."""
  alpha, sigma = elastic_params_for_source(tf.shape(image), cfg)
  return elastic_deform(image, alpha, sigma, seed)


# ------------------------------------------------------------------------- compositions


def _sample_crop_box(image: tf.Tensor, cfg: AugmentConfig, seed) -> Tuple[tf.Tensor, tf.Tensor]:
  bbox = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=bbox, seed=_seed(seed),
      min_object_covered=cfg.crop_min_object_covered,
      aspect_ratio_range=(cfg.crop_aspect_min, cfg.crop_aspect_max),
      area_range=(cfg.crop_area_min, cfg.crop_area_max), max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  return begin, size


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

  Equivalent to ``crop(rotate(elastic_deform(image, alpha, sigma), angle))`` (same crop
  box distribution, same displacement field, same rotation convention) but each output
  pixel is traced back through the three maps and the source is sampled once, which is
  several times faster than warping the full image twice and avoids compounding
  interpolation blur. ``alpha``/``sigma`` in pixels of ``image``; ``alpha = 0`` skips the
  deformation. Returns ``[S, S, 3]`` in [0, 1].
  """
  seed = _seed(seed)
  size_out = cfg.image_size
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  begin, size = _sample_crop_box(image, cfg, _sub(seed, _OP_CROP))
  begin, size = tf.cast(begin, tf.float32), tf.cast(size, tf.float32)
  # Output pixel o → crop-box point c = a·o + b (half-pixel convention of tf.image.resize)
  # → point q = R(c − centre) + centre of the deformed image (as in ``rotate``). Both maps
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
    coarse, _ = _coarse_field(shape[0], shape[1], alpha, sigma, _sub(seed, _OP_ELASTIC))
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


def _geometric_prefix(image: tf.Tensor, cfg: AugmentConfig, seed: tf.Tensor,
                      medical_extras: bool) -> tf.Tensor:
  image = tf.convert_to_tensor(image, tf.float32)
  image.set_shape([None, None, 3])
  if medical_extras:
    image = _maybe(cfg.hist_eq_prob, _sub(seed, _OP_HIST_EQ), equalize_histogram, image)
  elastic = medical_extras and cfg.elastic_alpha > 0 and cfg.elastic_prob > 0
  if cfg.rotation_degrees > 0 or elastic:
    limit = math.radians(cfg.rotation_degrees)
    angle = _uniform(_sub(seed, _OP_ROTATE), -limit, limit) if limit > 0 else 0.0
    alpha, sigma = 0.0, 1.0
    if elastic:
      alpha, sigma = elastic_params_for_source(tf.shape(image), cfg)
      on = tf.cast(_uniform(_sub(seed, _OP_ELASTIC)) < cfg.elastic_prob, tf.float32)
      alpha = on * alpha
    else:
      cfg = dataclasses.replace(cfg, elastic_alpha=0.0)
    image = warped_crop(image, cfg, angle, alpha, sigma, _sub(seed, _OP_ELASTIC + 100))
  else:
    image = random_resized_crop(image, cfg, _sub(seed, _OP_CROP))
  return random_flips(image, cfg, seed)


def augment_view(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """One random contrastive view ``[S, S, 3]`` in [0, 1] of ``image [H, W, 3]``.

  hist-eq → elastic → rotation → crop → flips → colour (p color_prob) → grayscale
  (p grayscale_prob) → blur (p blur_prob). Pure function of (image, cfg, seed).
  """
  seed = _seed(seed)
  image = _geometric_prefix(image, cfg, seed, medical_extras=True)
  if cfg.color_strength > 0:
    image = _maybe(cfg.color_prob, _sub(seed, _OP_COLOR),
                   lambda x: color_jitter(x, cfg.color_strength, _sub(seed, _OP_COLOR + 100)),
                   image)
  image = _maybe(cfg.grayscale_prob, _sub(seed, _OP_GRAY), to_grayscale, image)
  image = _maybe(cfg.blur_prob, _sub(seed, _OP_BLUR),
                 lambda x: random_blur(x, cfg, _sub(seed, _OP_BLUR + 100)), image)
  image.set_shape([cfg.image_size, cfg.image_size, 3])
  return image


def finetune_augment(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Fine-tuning view ``[S, S, 3]``: rotation → crop → flips (no colour, blur, hist-eq,
  elastic), as REMEDIS fine-tuning drops the colour distortion."""
  image = _geometric_prefix(image, cfg, _seed(seed), medical_extras=False)
  image.set_shape([cfg.image_size, cfg.image_size, 3])
  return image


def eval_preprocess(image: tf.Tensor, image_size: int,
                    crop_fraction: float = 0.875) -> tf.Tensor:
  """Centre square crop of side round(crop_fraction · shorter side), bicubic resize to
  ``[image_size, image_size, 3]``, clipped to [0, 1]."""
  if not 0.0 < crop_fraction <= 1.0:
    raise ConfigError(f"crop_fraction={crop_fraction!r}: must be in (0, 1]")
  image = tf.convert_to_tensor(image, tf.float32)
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  side = tf.cast(tf.round(crop_fraction * tf.cast(tf.minimum(h, w), tf.float32)), tf.int32)
  side = tf.maximum(side, 1)
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  crop = image[top:top + side, left:left + side]
  out = _resize(crop, image_size, "bicubic", False)
  out.set_shape([image_size, image_size, 3])
  return out


def sample_mixup_lambda(alpha: float, seed) -> tf.Tensor:
  """λ ~ Beta(α, α) as a float32 scalar, from an XLA-compilable stateless sampler (so a
  train step using MixUp compiles with ``--xla``)."""
  return stateless_random.symmetric_beta(alpha, _seed(seed))


def mixup_batch(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed,
                mask: Optional[tf.Tensor] = None
                ) -> Union[Tuple[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
  """BiT MixUp: one λ ~ Beta(α, α) per batch, each example mixed with the batch reversed.

  ``images [B,H,W,3]``, ``labels [B,K]`` → ``(λ·x + (1−λ)·x[::-1], λ·y + (1−λ)·y[::-1])``.
  With ``mask [B,K]`` also returns ``mask · mask[::-1]`` (a mixed label is only known where
  both partners' labels are). ``alpha <= 0`` returns the inputs unchanged.
  """
  if alpha <= 0:
    return (images, labels) if mask is None else (images, labels, mask)
  lam = sample_mixup_lambda(alpha, seed)
  images = tf.convert_to_tensor(images)
  labels = tf.convert_to_tensor(labels)
  lam_x = tf.cast(lam, images.dtype)
  mixed_x = lam_x * images + (1.0 - lam_x) * tf.reverse(images, [0])
  lam_y = tf.cast(lam, labels.dtype)
  mixed_y = lam_y * labels + (1.0 - lam_y) * tf.reverse(labels, [0])
  if mask is None:
    return mixed_x, mixed_y
  mask = tf.convert_to_tensor(mask)
  return mixed_x, mixed_y, mask * tf.reverse(mask, [0])
