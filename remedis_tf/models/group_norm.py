"""GroupNorm for NHWC activations: Keras' ``GroupNormalization`` with a shorter gradient.

:class:`GroupNormReLU` keeps the variables, names and checkpoint keys of Keras'
``GroupNormalization`` and computes the same forward floats; its backward pass is the
closed-form GroupNorm gradient (:func:`group_norm_nhwc`) instead of the autodiff graph of
the composite ops, and it can apply the ReLU that follows every GroupNorm in BiT in the same
kernel. It lives apart from the backbone so that ``resnet_v2.py`` reads as the architecture
alone.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def group_norm_nhwc(x, gamma, beta, groups: int, epsilon: float, relu: bool):
  """GroupNorm (+ optional ReLU) of float32 NHWC ``x`` with a hand-written gradient.

  Forward: exactly Keras' ``GroupNormalization`` arithmetic (``tf.nn.moments`` over
  (H, W, C/groups) per sample and group, then ``x * inv + (beta - mean * inv)`` with
  ``inv = gamma / sqrt(var + eps)``, one per-(sample, channel) multiply-add), so outputs
  are the same floats. Backward: the exact GroupNorm gradient as two per-(sample, channel)
  reductions over H·W and one multiply-add over the activation, in place of the much
  longer autodiff graph of the composite ops (most of the saving).
  """
  channels = x.shape[-1]
  per_group = channels // groups
  shape = tf.shape(x)
  x3 = tf.reshape(x, [shape[0], shape[1] * shape[2], channels])
  count = tf.cast(shape[1] * shape[2] * per_group, tf.float32)

  @tf.custom_gradient
  def fn(x3, gamma, beta):
    grouped = tf.reshape(x3, [shape[0], shape[1] * shape[2], groups, per_group])
    mean, var = tf.nn.moments(grouped, axes=[1, 3], keepdims=True)            # [B, 1, G, 1]
    rstd = tf.math.rsqrt(var + epsilon)
    gamma4 = tf.reshape(gamma, [1, 1, groups, per_group])
    inv = rstd * gamma4                                                       # [B, 1, G, C/G]
    offset = tf.reshape(beta, [1, 1, groups, per_group]) - mean * inv
    scale_c = tf.reshape(inv, [-1, 1, channels])
    y = x3 * scale_c + tf.reshape(offset, [-1, 1, channels])
    if relu:
      y = tf.nn.relu(y)

    def grad(dy):
      if relu:
        dy = tf.raw_ops.ReluGrad(gradients=dy, features=y)
      as_groups = lambda t: tf.reshape(t, [-1, 1, groups, per_group])
      s_dy = as_groups(tf.reduce_sum(dy, axis=1))
      s_dyx = as_groups(tf.reduce_sum(dy * x3, axis=1))
      s_dyxhat = rstd * (s_dyx - mean * s_dy)          # sum over H·W of dy · x_hat
      d_beta = tf.reduce_sum(tf.reshape(s_dy, [-1, channels]), axis=0)
      d_gamma = tf.reduce_sum(tf.reshape(s_dyxhat, [-1, channels]), axis=0)
      # dx = rstd · (g·dy − mean(g·dy) − x_hat · mean(g·dy·x_hat)), group means over
      # (H, W, C/groups); rewritten as dy·inv + x·a + b with per-(sample, group) a, b.
      m1 = tf.reduce_sum(gamma4 * s_dy, axis=3, keepdims=True) / count
      m2 = tf.reduce_sum(gamma4 * s_dyxhat, axis=3, keepdims=True) / count
      a = -rstd * rstd * m2
      b = -rstd * m1 - a * mean
      per_channel = lambda t: tf.reshape(tf.broadcast_to(t, tf.shape(inv)), [-1, 1, channels])
      return dy * scale_c + (x3 * per_channel(a) + per_channel(b)), d_gamma, d_beta

    return y, grad

  return tf.reshape(fn(x3, gamma, beta), shape)


class GroupNormReLU(keras.layers.GroupNormalization):
  """Keras ``GroupNormalization`` (same variables, names and checkpoint keys) with a
  faster NHWC kernel and an optional fused ReLU.

  Input ``[B, H, W, C]`` (C divisible by ``groups``), any float dtype; statistics and
  normalisation run in float32 and the output has the layer's compute dtype, as in Keras.
  Other ranks/axes fall back to Keras' implementation.
  """

  def __init__(self, groups: int = 32, relu: bool = False, **kwargs):
    super().__init__(groups=groups, **kwargs)
    self.relu = relu

  def call(self, inputs):
    fast = (len(inputs.shape) == 4 and self.axis in (-1, 3) and self.center and self.scale
            and inputs.shape[-1] is not None and self.groups > 0)
    if not fast:
      out = super().call(inputs)
      return ops.relu(out) if self.relu else out
    x = tf.cast(inputs, tf.float32)
    y = group_norm_nhwc(x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
                         self.groups, self.epsilon, self.relu)
    return tf.cast(y, self.compute_dtype)

  def get_config(self):
    return {**super().get_config(), "relu": self.relu}
