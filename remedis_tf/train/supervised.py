"""Supervised stages as a loop Task: BiT-style upstream training (stage 1) and fine-tuning
(stage 3: full, linear evaluation, or frozen up to a block; from the backbone output or a
projection layer)."""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, ClassVar, Dict, Optional, Tuple

import keras
import tensorflow as tf

from remedis_tf import losses
from remedis_tf.data import augment as augment_lib
from remedis_tf.data import pipeline
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError
from remedis_tf.models.classifier import scoring_forward
from remedis_tf.models.heads import ClassificationHead
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.train.task_base import TaskBase

_FREEZE = re.compile(r"^(full|linear|freeze:[0-4])$")


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
  """Settings of a supervised stage.

  Attributes:
    variant: backbone variant.
    global_batch_size: examples per step over all replicas.
    train_mode: ``full`` (end to end), ``linear`` (frozen backbone: linear evaluation), or
      ``freeze:N`` (root and blocks 1..N frozen, N in 0..4).
    from_projection_layer: 0 = classify the backbone's pooled output; k > 0 = classify the
      output of projection layer k (the projection head is then built and, from a
      contrastive checkpoint, restored).
    projection_layers / projection_dim / projection_hidden_dim: projection head shape (must
      match the contrastive run when ``from_projection_layer > 0``).
    mixup_alpha: MixUp α (0 = off); BiT-HyperRule uses 0.1 for datasets of >= 20k images.
    init: init weights (see ``remedis_tf.train.init_weights``).
    seed: data order, augmentation, MixUp and initialisation seed.
  """
  variant: str = "r50x1"
  global_batch_size: int = 512
  train_mode: str = "full"
  from_projection_layer: int = 0
  projection_layers: int = 2
  projection_dim: int = 128
  projection_hidden_dim: int = 0
  mixup_alpha: float = 0.0
  init: str = ""
  seed: int = 0

  # Init weights only matter to a fresh run: a resumed one restores its own checkpoint.
  RESUMABLE_FIELDS: ClassVar[Tuple[str, ...]] = ("init",)

  def __post_init__(self):
    if not _FREEZE.match(self.train_mode):
      raise ConfigError(f"must be full, linear or freeze:N (N=0..4), got {self.train_mode!r}",
                        field="train_mode")
    if not 0 <= self.from_projection_layer <= self.projection_layers:
      raise ConfigError(f"must be in 0..{self.projection_layers}, "
                        f"got {self.from_projection_layer}", field="from_projection_layer")
    if self.mixup_alpha < 0:
      raise ConfigError(f"must be >= 0, got {self.mixup_alpha}", field="mixup_alpha")
    if self.global_batch_size < 1:
      raise ConfigError(f"must be >= 1, got {self.global_batch_size}",
                        field="global_batch_size")


class SupervisedTask(TaskBase):
  """Classification with masked sigmoid (multi-label/binary) or softmax (multi-class) loss."""

  def __init__(self, config: SupervisedConfig, optimizer_config: OptimizerConfig,
               augment_config: Optional[augment_lib.AugmentConfig], image_size: int,
               manifest: Manifest, precision_policy: str = "float32"):
    if manifest.task == "unlabelled":
      raise ConfigError(f"supervised training needs labels; {manifest.source} is unlabelled")
    super().__init__(config, optimizer_config, augment_config, manifest, image_size,
                     precision_policy)
    self.metric_names = ["loss"]
    self.classification_head = None
    # Calibration temperatures of the restored checkpoint (a remedis_tf.eval.calibration
    # record, set by stages.load_classifier); None = none fitted (T = 1).
    self.temperature = None
    self._inference = None

  @property
  def frozen_backbone(self) -> bool:
    return self.config.train_mode == "linear"

  def _build_heads(self, width: int) -> None:
    features = width
    if self.config.from_projection_layer > 0:
      outs = self._build_projection_head(width)
      features = int(outs[self.config.from_projection_layer].shape[-1])
    self.classification_head = ClassificationHead(self.manifest.num_labels,
                                                  name="classification_head")
    self.classification_head(tf.zeros((1, features)))
    self._apply_freezing()

  def _apply_freezing(self) -> None:
    mode = self.config.train_mode
    if mode == "linear":
      self.backbone.trainable = False
      if self.projection_head is not None:
        self.projection_head.trainable = False
    elif mode.startswith("freeze:"):
      upto = int(mode.split(":")[1])
      if not hasattr(self.backbone, "blocks"):
        raise ConfigError("train_mode freeze:N needs a native BiT backbone, not a wrapped "
                          "SavedModel; use full or linear")
      self.backbone.root_conv.trainable = False
      for units in self.backbone.blocks[:upto]:
        for unit in units:
          unit.trainable = False

  def modules(self) -> Dict[str, keras.layers.Layer]:
    """Backbone, projection head (when built) and classification head: also all that
    inference needs, so a best-model checkpoint and an export keep exactly these."""
    items = {"backbone": self.backbone}
    if self.projection_head is not None:
      items["projection_head"] = self.projection_head
    items["classification_head"] = self.classification_head
    return items

  def _restore_projection(self) -> bool:
    return self.config.from_projection_layer > 0

  def dataset_fn(self, input_context, start_step: int) -> tf.data.Dataset:
    return pipeline.supervised_dataset(self.manifest, image_size=self.image_size,
                                       **self._stream_options(input_context, start_step))

  def forward(self, images: tf.Tensor, training: bool = False) -> Dict[str, tf.Tensor]:
    """images ``[B,H,W,3]`` in [0,1] → ``{"logits": [B,K] f32, "embedding": [B,C]}``."""
    backbone_training = training and not self.frozen_backbone
    features = self.backbone(images, training=backbone_training)["pooled"]
    if self.projection_head is not None:
      outs = self.projection_head(features, training=backbone_training)
      features = outs[self.config.from_projection_layer]
    return {"logits": self.classification_head(features), "embedding": features}

  def inference_fn(self, temperature: Optional[tf.Tensor] = None
                   ) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
    """``images -> {"scores": [B,K] probabilities, "logits": [B,K], "embedding": [B,C]}``
    (float32). ``scores`` are of ``logits / temperature`` (a ``[K]`` tensor or variable,
    e.g. a calibration record's vector); without one, of the raw logits, and the same
    callable is returned on every call so prediction passes trace once."""
    if temperature is None and self._inference is not None:
      return self._inference
    infer = scoring_forward(lambda images: self.forward(images, training=False),
                            self.manifest.task, temperature)
    if temperature is None:
      self._inference = infer
    return infer

  def train_step(self, batch: Dict[str, tf.Tensor], step: tf.Tensor) -> Dict[str, tf.Tensor]:
    images, labels, mask = batch["image"], batch["label"], batch["mask"]
    if self.config.mixup_alpha > 0:
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group
      seed = tf.stack([tf.cast(self.config.seed, tf.int64) * 1000003 + step,
                       tf.cast(replica, tf.int64)])
      images, labels, mask = augment_lib.mixup_batch(
          images, labels, self.config.mixup_alpha, seed, mask=mask)
    with tf.GradientTape() as tape:
      logits = self.forward(images, training=True)["logits"]
      per_example = losses.classification_loss(self.manifest.task, labels, logits, mask)
      loss_sum = tf.reduce_sum(per_example)
      scaled = self.scale_for_gradients(loss_sum / float(self.config.global_batch_size))
    self.apply_loss(tape, scaled)
    return {"loss": tf.reduce_mean(per_example)}
