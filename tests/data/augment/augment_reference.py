"""Unfused reference warps that ``geometry.warped_crop`` is tested against.

The library applies elastic deformation → rotation → crop as one resampling; these are the
straightforward full-image versions of the first two steps (each a separate resampling of
the whole image), kept here because only the tests use them.
"""

import math

import tensorflow as tf

from remedis_tf.data.augment import geometry, ops
from remedis_tf.data.augment.config import AugmentConfig


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
  return rotate(image, ops.uniform(ops.as_seed(seed), -limit, limit), cfg.rotation_fill_mode)


def displacement_field(height, width, alpha, sigma, seed) -> tf.Tensor:
  """Simard displacement field ``[H, W, 2]`` (dy, dx) in pixels: α · (G_σ * U(−1, 1)).

  The bilinear upsampling of ``geometry.coarse_displacement_field`` (which ``warped_crop``
  samples directly).
  """
  field, _ = geometry.coarse_displacement_field(height, width, alpha, sigma, seed)
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
  return geometry.bilinear_sample(image, ys + field[..., 0], xs + field[..., 1])
