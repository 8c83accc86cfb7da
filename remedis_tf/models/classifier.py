"""A fine-tuned classifier as one Keras model: backbone → (projection layer k) → linear head.

Used where the three parts must travel together (Keras presets); training keeps them as
separate checkpoint items (``remedis_tf.train.supervised``).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import keras
import tensorflow as tf
from keras import ops

from remedis_tf.models.heads import ClassificationHead, ProjectionHead


class Classifier(keras.Model):
  """Backbone + optional projection head + :class:`ClassificationHead`.

  Call: ``outputs = model(images, training=...)`` with images float ``[B,H,W,3]`` in
  ``[0,1]``; returns ``{"logits": [B,K] float32, "embedding": [B,C]}`` where the embedding
  is what the head reads: the backbone's pooled features, or projection layer
  ``from_projection_layer`` (1..n) of ``projection_head``.
  """

  def __init__(self, backbone: keras.Model, classification_head: ClassificationHead,
               projection_head: Optional[ProjectionHead] = None,
               from_projection_layer: int = 0, name: str = "classifier", **kwargs):
    super().__init__(name=name, **kwargs)
    if (projection_head is None) != (from_projection_layer == 0):
      raise ValueError("from_projection_layer > 0 needs a projection head and vice versa")
    self.backbone = backbone
    self.projection_head = projection_head
    self.classification_head = classification_head
    self.from_projection_layer = from_projection_layer

  def call(self, images, training=None):
    features = self.backbone(images, training=training)["pooled"]
    if self.projection_head is not None:
      features = self.projection_head(features, training=training)[self.from_projection_layer]
    return {"logits": self.classification_head(features, training=training),
            "embedding": features}

  def build_for(self, image_size: int = 32) -> "Classifier":
    """Creates all variables by calling the model once on zeros; returns self."""
    self(ops.zeros((1, image_size, image_size, 3)), training=False)
    return self


def scoring_forward(model_fn: Callable[[tf.Tensor], Dict[str, tf.Tensor]], task: str,
                    temperature: Optional[tf.Tensor] = None
                    ) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  """The scoring forward of a classifier, the one rule every model source shares.

  ``model_fn``: ``images -> {"logits": [B,K], "embedding": [B,C]}`` (any float dtype).
  Returns ``images -> {"scores", "logits", "embedding"}``, all float32: raw ``logits``,
  ``embedding``, and ``scores`` = sigmoid (multi-label/binary) or softmax (multi-class)
  of ``logits / temperature`` (``temperature``: a ``[K]`` tensor or variable; None: of
  the raw logits).
  """
  multiclass = task == "multiclass"

  def forward(images):
    out = model_fn(images)
    logits = tf.cast(out["logits"], tf.float32)
    scaled = logits if temperature is None else logits / temperature
    return {"scores": tf.nn.softmax(scaled, axis=-1) if multiclass else tf.sigmoid(scaled),
            "logits": logits, "embedding": tf.cast(out["embedding"], tf.float32)}
  return forward
