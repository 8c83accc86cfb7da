"""Shared inputs of the augmentation tests."""

import dataclasses

import numpy as np
import tensorflow as tf

from remedis_tf.data import augment as A

SEED = tf.constant([3, 7], tf.int64)


def photo(h=48, w=40, seed=0):
  """A smooth random colour image (structure at several scales) in [0, 1]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  base = np.stack([np.sin(6 * xx + 2 * c) * np.cos(4 * yy - c) for c in range(3)], -1)
  return tf.constant(np.clip(0.5 + 0.35 * base + 0.1 * rng.random((h, w, 3)), 0, 1),
                     tf.float32)


def off(**changes):
  """A config with every random operation disabled except ``changes``."""
  cfg = A.AugmentConfig(image_size=32, crop_area_min=1.0, crop_aspect_min=1.0,
                        crop_aspect_max=1.0, crop_min_object_covered=0.0, flip_lr_prob=0.0,
                        color_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  return dataclasses.replace(cfg, **changes)
