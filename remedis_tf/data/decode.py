"""Image decoding to float32 ``[H, W, 3]`` in ``[0, 1]`` inside ``tf.data`` (graph mode).

Minimal first version (PNG 8/16-bit and JPEG); DICOM and error reporting are added by the
data-layer work.
"""

from __future__ import annotations

import tensorflow as tf


def decode_image_bytes(data: tf.Tensor) -> tf.Tensor:
  """Encoded PNG/JPEG bytes → float32 ``[H, W, 3]`` in ``[0, 1]`` (16-bit kept exact)."""
  image = tf.io.decode_image(data, channels=0, dtype=tf.uint16, expand_animations=False)
  image = tf.cast(image, tf.float32) / 65535.0
  channels = tf.shape(image)[-1]
  image = tf.cond(channels == 1, lambda: tf.tile(image, [1, 1, 3]),
                  lambda: image[..., :3])
  image.set_shape([None, None, 3])
  return image


def load_image(path: tf.Tensor) -> tf.Tensor:
  """Reads and decodes the image at ``path`` (string scalar tensor)."""
  return decode_image_bytes(tf.io.read_file(path))
