"""Views: the compositions of augmentations that the input pipelines apply, and MixUp.

A view is a pure function of (image, config, seed): the input pipeline can regenerate any
example at any position regardless of how many replicas read it. Each random choice uses
its own sub-seed ``fold_in(seed, OP_...)`` (``config``), so switching one operation on or
off does not change the randomness of the others.

Order of a contrastive view (REMEDIS, docs/numerics.md):
histogram equalisation → elastic deformation → rotation → random resized crop →
flips / 90° rotations → colour jitter + grayscale → Gaussian blur.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple, Union

import tensorflow as tf

from remedis_tf import stateless_random
from remedis_tf.data import decode
from remedis_tf.data.augment.config import (EVAL_CROP_FRACTION, OP_BLUR, OP_COLOR, OP_CROP,
                                            OP_ELASTIC, OP_GRAY, OP_HIST_EQ, OP_ROTATE,
                                            AugmentConfig)
from remedis_tf.data.augment.geometry import (elastic_params_for_source, random_flips,
                                              random_resized_crop, warped_crop)
from remedis_tf.data.augment.ops import (as_seed, color_jitter, equalize_histogram, maybe,
                                         random_blur, resize_clipped, sub_seed, to_grayscale,
                                         uniform)
from remedis_tf.errors import ConfigError


def _geometric_prefix(image: tf.Tensor, cfg: AugmentConfig, seed: tf.Tensor,
                      medical_extras: bool) -> tf.Tensor:
  """hist-eq (medical extras) → elastic (medical extras) → rotation → crop → flips.

  Rotation and elastic deformation, when on, are fused with the crop into one
  ``warped_crop`` resampling; otherwise the crop is a plain resized crop.
  """
  image = tf.convert_to_tensor(image, tf.float32)
  image.set_shape([None, None, 3])
  if medical_extras:
    image = maybe(cfg.hist_eq_prob, sub_seed(seed, OP_HIST_EQ), equalize_histogram, image)
  elastic = medical_extras and cfg.elastic_alpha > 0 and cfg.elastic_prob > 0
  if cfg.rotation_degrees > 0 or elastic:
    limit = math.radians(cfg.rotation_degrees)
    angle = uniform(sub_seed(seed, OP_ROTATE), -limit, limit) if limit > 0 else 0.0
    alpha, sigma = 0.0, 1.0
    if elastic:
      alpha, sigma = elastic_params_for_source(tf.shape(image), cfg)
      on = tf.cast(uniform(sub_seed(seed, OP_ELASTIC)) < cfg.elastic_prob, tf.float32)
      alpha = on * alpha
    else:
      cfg = dataclasses.replace(cfg, elastic_alpha=0.0)
    image = warped_crop(image, cfg, angle, alpha, sigma, sub_seed(seed, OP_ELASTIC + 100))
  else:
    image = random_resized_crop(image, cfg, sub_seed(seed, OP_CROP))
  return random_flips(image, cfg, seed)


def augment_view(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """One random contrastive view ``[S, S, 3]`` in [0, 1] of ``image [H, W, 3]``.

  hist-eq → elastic → rotation → crop → flips → colour (p color_prob) → grayscale
  (p grayscale_prob) → blur (p blur_prob). Pure function of (image, cfg, seed).
  """
  seed = as_seed(seed)
  image = _geometric_prefix(image, cfg, seed, medical_extras=True)
  if cfg.color_strength > 0:
    image = maybe(cfg.color_prob, sub_seed(seed, OP_COLOR),
                  lambda x: color_jitter(x, cfg.color_strength, sub_seed(seed, OP_COLOR + 100)),
                  image)
  image = maybe(cfg.grayscale_prob, sub_seed(seed, OP_GRAY), to_grayscale, image)
  image = maybe(cfg.blur_prob, sub_seed(seed, OP_BLUR),
                lambda x: random_blur(x, cfg, sub_seed(seed, OP_BLUR + 100)), image)
  image.set_shape([cfg.image_size, cfg.image_size, 3])
  return image


def finetune_augment(image: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Fine-tuning view ``[S, S, 3]``: rotation → crop → flips (no colour, blur, hist-eq,
  elastic), as REMEDIS fine-tuning drops the colour distortion."""
  image = _geometric_prefix(image, cfg, as_seed(seed), medical_extras=False)
  image.set_shape([cfg.image_size, cfg.image_size, 3])
  return image


def eval_preprocess(image: tf.Tensor, image_size: int,
                    crop_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
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
  out = resize_clipped(crop, image_size, "bicubic", False)
  out.set_shape([image_size, image_size, 3])
  return out


def eval_transform(images: tf.Tensor, image_size: int,
                   crop_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
  """What evaluation does to a decoded image, on one image ``[H,W,3]`` or on each image of
  a batch ``[B,H,W,3]`` (float in [0, 1], or uint8 scaled by 1/255): the decoders'
  pre-shrink to a longest side of ``decode.working_size(image_size)`` (``max(4·S, 1024)``,
  area resampling; a no-op for smaller images), then :func:`eval_preprocess`. Returns
  float32 ``[S,S,3]`` / ``[B,S,S,3]``.

  This is the input a classifier was evaluated on when ``evaluate`` read the same pixels
  from a PNG or DICOM file; a JPEG larger than twice the working size was first reduced in
  its DCT domain by the decoder, which this cannot reproduce (sub-1 % pixel differences).
  """
  images = tf.convert_to_tensor(images)
  if images.dtype == tf.uint8:
    images = tf.cast(images, tf.float32) / 255.0
  images = tf.cast(images, tf.float32)
  working = decode.working_size(image_size)

  def one(image):
    return eval_preprocess(decode.shrink_to(image, working), image_size, crop_fraction)

  if images.shape.rank == 3:
    return one(images)
  return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(
      [image_size, image_size, 3], tf.float32))


def sample_mixup_lambda(alpha: float, seed) -> tf.Tensor:
  """λ ~ Beta(α, α) as a float32 scalar, from an XLA-compilable stateless sampler (so a
  train step using MixUp compiles with ``--xla``)."""
  return stateless_random.symmetric_beta(alpha, as_seed(seed))


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
