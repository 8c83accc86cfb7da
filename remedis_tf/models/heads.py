"""Heads that sit on the backbone's pooled features.

* :class:`ProjectionHead` — SimCLR-v2 projection MLP (docs/numerics.md).
* :class:`ClassificationHead` — linear classifier for fine-tuning / linear eval.
"""

from __future__ import annotations

from typing import List

import keras
from keras import ops

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class ProjectionHead(keras.layers.Layer):
  """[Dense(d, no bias) -> BN -> ReLU] x (n-1) -> Dense(out, no bias) -> BN(center=False).

  BatchNorm is synchronised across replicas (``synchronized=True``), momentum 0.9,
  eps 1e-5; kernels are initialised N(0, 0.01).

  Call: ``outputs = head(pooled, training)`` with pooled ``[B, C]``; returns the list
  ``[pooled, h_1, ..., h_n]`` (index 0 is the input), so ``outputs[-1]`` is the projection
  used by the contrastive loss and ``outputs[k]`` is what fine-tuning from layer k uses.
  """

  def __init__(self, num_layers: int = 2, hidden_dim: int = 2048, output_dim: int = 128,
               **kwargs):
    super().__init__(**kwargs)
    if num_layers < 1:
      raise ValueError(f"projection head needs >= 1 layer, got {num_layers}")
    self.num_layers = num_layers
    self.hidden_dim = hidden_dim
    self.output_dim = output_dim
    self.dense_layers = []
    self.bn_layers = []
    for i in range(num_layers):
      last = i == num_layers - 1
      dense = keras.layers.Dense(
          output_dim if last else hidden_dim, use_bias=False,
          kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
          name=f"dense_{i}")
      bn = keras.layers.BatchNormalization(
          momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=not last, synchronized=True,
          name=f"bn_{i}")
      # Keras 3 list attributes are invisible to tf.train.Checkpoint; named attributes
      # make the layers checkpointable.
      setattr(self, f"dense_{i}", dense)
      setattr(self, f"bn_{i}", bn)
      self.dense_layers.append(dense)
      self.bn_layers.append(bn)

  def call(self, pooled, training=None) -> List:
    outputs = [pooled]
    x = pooled
    for i, (dense, bn) in enumerate(zip(self.dense_layers, self.bn_layers)):
      x = bn(dense(x), training=training)
      if i < self.num_layers - 1:
        x = ops.relu(x)
      outputs.append(x)
    return outputs


class ClassificationHead(keras.layers.Layer):
  """Linear classifier ``[B, C] -> [B, K]`` logits, zero-initialised like BiT's head.

  Logits are returned in float32 whatever the compute policy, so losses are stable.
  """

  def __init__(self, num_outputs: int, zero_init: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.num_outputs = num_outputs
    self.dense = keras.layers.Dense(
        num_outputs, kernel_initializer="zeros" if zero_init else "glorot_uniform",
        name="logits")

  def call(self, features, training=None):
    return ops.cast(self.dense(features), "float32")
