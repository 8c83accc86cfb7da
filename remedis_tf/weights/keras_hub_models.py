"""Our BiT backbone and fine-tuned classifier as real KerasHub models.

KerasHub has no GroupNorm + weight-standardised ResNet-v2, so these classes make one:

* :class:`BiTBackbone` — a ``keras_hub.models.Backbone`` (a functional model) over our own
  :class:`~remedis_tf.models.resnet_v2.ResNetV2`, kept whole as its one inner layer
  (``backbone.resnet``), so the variable names, the BiT ``.npz`` key map
  (``backbone.resnet.bit_variable_map()``), checkpoints and SavedModel export are those of
  ``ResNetV2``. Input ``[B,H,W,3]`` in ``[0,1]``; output the feature map ``[B,h,w,C]``
  (the KerasHub image-backbone convention: a generic ``keras_hub.models.ImageClassifier``
  average-pools it into BiT's pre-logits). A BiT head, when converted with one, lives in
  ``backbone.resnet`` (``backbone.resnet(images)["logits"]``).
* :class:`RemedisImageConverter` — our evaluation transform: the decoders' pre-shrink of
  large images (area resampling to a longest side of ``max(4·image_size, 1024)``), centre
  square crop of ``crop_fraction`` of the shorter side, bicubic resize to ``image_size``,
  clip to [0,1] (``remedis_tf.data.augment.eval_transform``, the functions the evaluation
  pipeline applies to each image). Input float images in [0,1] (uint8 images are divided
  by 255).
* :class:`RemedisImageClassifierPreprocessor` — the ``ImageClassifierPreprocessor`` that
  holds it.
* :class:`RemedisImageClassifier` — a ``keras_hub.models.ImageClassifier``: backbone →
  average pool → (projection layer ``k``) → linear head → ``act(logits / T)``, so
  ``predict`` returns the calibrated scores evaluation reports; the label names, task and
  temperatures are part of its config (``task.json``).

Every class is registered as ``remedis_tf>ClassName``: after ``import remedis_tf``,
``keras_hub.models.Backbone.from_preset`` and ``keras_hub.models.ImageClassifier.from_preset``
rebuild them (see :mod:`remedis_tf.weights.keras_hub_presets` for writing presets).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras import ops

from remedis_tf.data import augment as augment_lib
from remedis_tf.models import resnet_v2
from remedis_tf.models.heads import ClassificationHead, ProjectionHead

PACKAGE = "remedis_tf"
TASKS = ("multilabel", "binary", "multiclass")


@keras.saving.register_keras_serializable(package=PACKAGE)
class BiTBackbone(keras_hub.models.Backbone):
  """BiT ResNet-v2 (GroupNorm + weight standardisation) as a KerasHub backbone.

  Args:
    variant: a ``ResNetV2`` variant (``r50x1``, …, ``tiny``).
    num_classes: size of the BiT head kept inside ``self.resnet`` (0: none).
    image_shape: input shape; ``(None, None, 3)`` takes any size ≥ 32.
    dtype: KerasHub's dtype argument (policy of the backbone).
  """

  def __init__(self, variant: str = "r50x1", num_classes: int = 0,
               image_shape: Sequence[Optional[int]] = (None, None, 3), dtype=None, **kwargs):
    kwargs.setdefault("name", "bit_backbone")
    resnet = resnet_v2.ResNetV2(variant, num_classes=int(num_classes), dtype=dtype)
    images = keras.Input(shape=tuple(image_shape), name="images")
    feature_map = resnet(images)["feature_map"]
    super().__init__(inputs=images, outputs=feature_map, dtype=dtype, **kwargs)
    self.resnet = resnet
    self.variant = variant
    self.num_classes = int(num_classes)
    self.image_shape = tuple(image_shape)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"variant": self.variant, "num_classes": self.num_classes,
                   "image_shape": list(self.image_shape)})
    return config


def eval_transform(images: tf.Tensor, image_size: int, crop_fraction: float) -> tf.Tensor:
  """The evaluation transform (:func:`remedis_tf.data.augment.eval_transform`: the
  decoders' pre-shrink, centre crop, resize) on one image ``[H,W,3]`` or a batch."""
  return augment_lib.eval_transform(images, image_size, crop_fraction)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RemedisImageConverter(keras_hub.layers.ImageConverter):
  """Our evaluation transform as a KerasHub ``ImageConverter`` (see module docstring).

  Args:
    image_size: the model's input side (an int or a square ``(S, S)``).
    crop_fraction: centre crop before resizing (the run's ``eval_crop_fraction``).
  """
  backbone_cls = BiTBackbone

  def __init__(self, image_size=None, crop_fraction: float = augment_lib.EVAL_CROP_FRACTION,
               **kwargs):
    if isinstance(image_size, int):
      image_size = (image_size, image_size)
    if image_size is not None and image_size[0] != image_size[1]:
      raise ValueError(f"image_size must be square, got {tuple(image_size)}")
    for unused in ("scale", "offset"):
      if kwargs.pop(unused, None) is not None:
        raise ValueError(f"{unused}: the model takes images in [0, 1] and rescales itself")
    kwargs.setdefault("interpolation", "bicubic")
    super().__init__(image_size=image_size, **kwargs)
    if not 0.0 < float(crop_fraction) <= 1.0:
      raise ValueError(f"crop_fraction={crop_fraction!r}: must be in (0, 1]")
    self.crop_fraction = float(crop_fraction)

  def call(self, inputs):
    if self.image_size is None:
      raise ValueError("RemedisImageConverter needs an image_size")
    return eval_transform(inputs, int(self.image_size[0]), self.crop_fraction)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config["crop_fraction"] = self.crop_fraction
    return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class RemedisImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
  """The ``ImageClassifierPreprocessor`` of :class:`RemedisImageClassifier`."""
  backbone_cls = BiTBackbone
  image_converter_cls = RemedisImageConverter


@keras.saving.register_keras_serializable(package=PACKAGE)
class RemedisImageClassifier(keras_hub.models.ImageClassifier):
  """A fine-tuned REMEDIS / BiT classifier as a KerasHub ``ImageClassifier``.

  Args:
    backbone: a :class:`BiTBackbone`.
    num_classes: K outputs.
    preprocessor: a :class:`RemedisImageClassifierPreprocessor` (or None).
    task: ``multilabel`` | ``binary`` (sigmoid scores) | ``multiclass`` (softmax); None:
      not recorded (sigmoid scores).
    label_names: K output names.
    temperature: K calibration temperatures (None: 1); scores are ``act(logits / T)``.
    calibration: the calibration record the temperatures came from (provenance only).
    projection_head: ``{"num_layers", "hidden_dim", "output_dim"}`` of the SimCLR
      projection head when the linear head reads projection layer ``from_projection_layer``.
    from_projection_layer: 0 (pooled features) or 1..n.

  ``predict(images)`` returns the scores ``[B, K]``; images go through the preprocessor.
  """
  backbone_cls = BiTBackbone
  preprocessor_cls = RemedisImageClassifierPreprocessor

  def __init__(self, backbone: BiTBackbone, num_classes: int, preprocessor=None,
               task: Optional[str] = "multilabel", label_names: Optional[Sequence[str]] = None,
               temperature: Optional[Sequence[float]] = None,
               calibration: Optional[Dict[str, Any]] = None,
               projection_head: Optional[Dict[str, int]] = None,
               from_projection_layer: int = 0, **kwargs):
    for name in ("pooling", "activation", "dropout", "head_dtype"):  # ImageClassifier's head
      kwargs.pop(name, None)
    if task is not None and task not in TASKS:
      raise ValueError(f"task={task!r}: must be one of {', '.join(TASKS)}")
    if (projection_head is None) != (int(from_projection_layer) == 0):
      raise ValueError("from_projection_layer > 0 needs a projection head and vice versa")
    if label_names is not None and len(label_names) != int(num_classes):
      raise ValueError(f"{len(label_names)} label names for {num_classes} classes")
    temps = np.ones((int(num_classes),), np.float32) if temperature is None else np.asarray(
        temperature, np.float32)
    if temps.shape != (int(num_classes),) or not np.all(np.isfinite(temps) & (temps > 0)):
      raise ValueError(f"temperature must be {num_classes} finite values > 0, got {temperature}")
    # ImageClassifier.__init__ would build its own pool → dropout → dense head; ours is
    # built here and the functional model is made by Task.__init__ directly.
    self.backbone = backbone
    self.preprocessor = preprocessor
    self.pooler = keras.layers.GlobalAveragePooling2D(name="pooler")
    self.projection_head = (ProjectionHead(int(projection_head["num_layers"]),
                                           int(projection_head["hidden_dim"]),
                                           int(projection_head["output_dim"]),
                                           name="projection_head")
                            if projection_head else None)
    self.classification_head = ClassificationHead(int(num_classes), name="classification_head")
    images = backbone.input
    features = self.pooler(backbone(images))
    if self.projection_head is not None:
      features = self.projection_head(features)[int(from_projection_layer)]
    logits = self.classification_head(features)
    scaled = ops.divide(logits, ops.convert_to_tensor(temps))
    scores = ops.softmax(scaled, axis=-1) if task == "multiclass" else ops.sigmoid(scaled)
    keras_hub.models.Task.__init__(self, inputs=images, outputs=scores, **kwargs)
    self.num_classes = int(num_classes)
    self.task = task
    self.label_names = list(label_names) if label_names is not None else None
    self.temperature = None if temperature is None else [float(t) for t in temps]
    self.calibration = None if calibration is None else dict(calibration)
    self.projection_config = None if projection_head is None else {
        k: int(projection_head[k]) for k in ("num_layers", "hidden_dim", "output_dim")}
    self.from_projection_layer = int(from_projection_layer)
    self.activation = "softmax" if task == "multiclass" else "sigmoid"
    self.pooling = "avg"
    self.dropout = 0.0

  def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
    """KerasHub's ``compile`` with a loss and metric that fit the outputs (probabilities;
    one-hot labels for multi-class, 0/1 labels otherwise)."""
    multiclass = getattr(self, "task", "multilabel") == "multiclass"
    if loss == "auto":
      loss = (keras.losses.CategoricalCrossentropy() if multiclass
              else keras.losses.BinaryCrossentropy())
    if metrics == "auto":
      metrics = ([keras.metrics.CategoricalAccuracy()] if multiclass
                 else [keras.metrics.AUC(multi_label=True)])
    super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    for name in ("pooling", "activation", "dropout"):
      config.pop(name, None)
    config.update({"task": self.task, "label_names": self.label_names,
                   "temperature": self.temperature, "calibration": self.calibration,
                   "projection_head": self.projection_config,
                   "from_projection_layer": self.from_projection_layer})
    return config
