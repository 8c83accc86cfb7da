"""REMEDIS stage 2: SimCLR / MICLe contrastive pretraining as a loop Task."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Dict, Tuple

import keras
import tensorflow as tf

from remedis_tf import losses
from remedis_tf.data import augment as augment_lib
from remedis_tf.data import pipeline
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError
from remedis_tf.models.heads import ClassificationHead
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.train.task_base import TaskBase


@dataclasses.dataclass(frozen=True)
class ContrastiveConfig:
  """Settings of the contrastive stage (model, loss, batching).

  Attributes:
    variant: backbone variant (``r50x1``, ``tiny``, ...).
    global_batch_size: images per step over all replicas (each gives two views).
    temperature: NT-Xent temperature τ.
    projection_layers: projection head depth n (2 in the REMEDIS code, 3 in SimCLR-v2).
    projection_dim: output dimension of the projection head.
    projection_hidden_dim: hidden width; 0 = backbone output width.
    micle: build positive pairs from two different images of the same patient/case.
    linear_probe: train a stop-gradient linear head beside the loss when labels exist.
    init: init weights (see ``remedis_tf.train.init_weights``).
    init_projection: also restore the projection head from a checkpoint init.
    seed: data order, augmentation and initialisation seed.
  """
  variant: str = "r50x1"
  global_batch_size: int = 512
  temperature: float = 0.1
  projection_layers: int = 2
  projection_dim: int = 128
  projection_hidden_dim: int = 0
  micle: bool = False
  linear_probe: bool = True
  init: str = ""
  init_projection: bool = False
  seed: int = 0

  # Init weights only matter to a fresh run: a resumed one restores its own checkpoint.
  RESUMABLE_FIELDS: ClassVar[Tuple[str, ...]] = ("init",)

  def __post_init__(self):
    if self.temperature <= 0:
      raise ConfigError(f"must be > 0, got {self.temperature}", field="temperature")
    if self.global_batch_size < 2:
      raise ConfigError(f"must be >= 2, got {self.global_batch_size}",
                        field="global_batch_size")
    if self.projection_layers < 1:
      raise ConfigError(f"must be >= 1, got {self.projection_layers}",
                        field="projection_layers")


class ContrastiveTask(TaskBase):
  """NT-Xent on two augmented views; optional online linear probe on stop-gradient features."""

  def __init__(self, config: ContrastiveConfig, optimizer_config: OptimizerConfig,
               augment_config: augment_lib.AugmentConfig, manifest: Manifest,
               precision_policy: str = "float32"):
    super().__init__(config, optimizer_config, augment_config, manifest,
                     augment_config.image_size, precision_policy)
    self.use_probe = config.linear_probe and manifest.task != "unlabelled"
    self.metric_names = ["loss", "contrastive_loss", "contrastive_accuracy",
                         "contrastive_entropy"] + (["probe_loss"] if self.use_probe else [])
    self.probe_head = None
    self._embed = None

  def _build_heads(self, width: int) -> None:
    self._build_projection_head(width)
    if self.use_probe:
      self.probe_head = ClassificationHead(self.manifest.num_labels, name="probe_head")
      self.probe_head(tf.zeros((1, width)))

  def modules(self) -> Dict[str, keras.layers.Layer]:
    items = {"backbone": self.backbone, "projection_head": self.projection_head}
    if self.probe_head is not None:
      items["probe_head"] = self.probe_head
    return items

  def _restore_projection(self) -> bool:
    return self.config.init_projection

  def dataset_fn(self, input_context, start_step: int) -> tf.data.Dataset:
    return pipeline.contrastive_dataset(self.manifest, micle=self.config.micle,
                                        **self._stream_options(input_context, start_step))

  def train_step(self, batch: Dict[str, tf.Tensor], step: tf.Tensor) -> Dict[str, tf.Tensor]:
    del step
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    view1, view2 = batch["view1"], batch["view2"]
    local = tf.shape(view1)[0]
    with tf.GradientTape() as tape:
      features = self.backbone(tf.concat([view1, view2], 0), training=True)
      pooled = features["pooled"]
      z = self.projection_head(pooled, training=True)[-1]
      z1, z2 = z[:local], z[local:]
      con_loss, logits, labels = losses.contrastive_loss(
          z1, z2, temperature=self.config.temperature)
      total = con_loss
      metrics = losses.contrastive_metrics(logits, labels)
      out = {"contrastive_loss": con_loss,
             "contrastive_accuracy": metrics["accuracy"],
             "contrastive_entropy": metrics["entropy"]}
      if self.probe_head is not None:
        probe_logits = self.probe_head(tf.stop_gradient(tf.cast(pooled[:local], tf.float32)))
        probe_loss = tf.reduce_mean(losses.classification_loss(
            self.manifest.task, batch["label"], probe_logits, batch["mask"]))
        total = total + probe_loss
        out["probe_loss"] = probe_loss
      scaled = self.scale_for_gradients(total / tf.cast(replicas, tf.float32))
    self.apply_loss(tape, scaled)
    out["loss"] = total
    return out

  def embedding_fn(self):
    """``images -> {"embedding": [B, C]}`` pooled backbone features (one traced callable)."""
    if self._embed is None:
      def embed(images):
        return {"embedding": tf.cast(self.backbone(images, training=False)["pooled"],
                                     tf.float32)}
      self._embed = embed
    return self._embed

  def summarize_inputs(self) -> None:
    """A grid of augmented view pairs (first 8 examples) for TensorBoard."""
    batch = next(iter(self.dataset_fn(None, 0).take(1)))
    n = min(8, int(batch["view1"].shape[0]))
    pairs = tf.concat([batch["view1"][:n], batch["view2"][:n]], axis=2)
    tf.summary.image("augmented_view_pairs", pairs, max_outputs=n)
