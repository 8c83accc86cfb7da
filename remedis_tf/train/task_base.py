"""What every training task shares: bookkeeping, backbone and projection-head building,
optimizer wiring, checkpoint items, init loading, input-stream options, summaries.

A task (``ContrastiveTask``, ``SupervisedTask``) derives from :class:`TaskBase` and adds only
what differs: its heads (:meth:`TaskBase._build_heads`), which of them form the model
(:meth:`TaskBase.modules`), its dataset, its loss and step. :class:`Task` is the contract
the loop relies on.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Protocol, Sequence

import keras
import tensorflow as tf

from remedis_tf.data import decode
from remedis_tf.models.heads import ProjectionHead
from remedis_tf.optim import factory as optim_factory
from remedis_tf.train import init_weights


class Task(Protocol):
  """What ``remedis_tf.train.loop.run_loop`` needs from a training stage (TaskBase below
  implements it; tests drive the loop with small tasks of their own)."""

  #: names of the scalar metrics ``train_step`` returns; the first is the loss.
  metric_names: Sequence[str]
  #: global batch size (examples per step, all replicas together).
  global_batch_size: int

  def build(self, strategy: tf.distribute.Strategy) -> None:
    """Creates models and optimizer (called inside ``strategy.scope()``)."""

  def checkpoint_items(self) -> Dict[str, Any]:
    """Trackables saved in checkpoints (backbone, heads, optimizer, ...)."""

  def initialize(self) -> List[str]:
    """Loads init weights for a fresh run; returns human-readable lines on what loaded."""

  def dataset_fn(self, input_context: Optional[tf.distribute.InputContext],
                 start_step: int) -> tf.data.Dataset:
    """Per-input-pipeline dataset positioned at ``start_step``."""

  def train_step(self, batch: Dict[str, tf.Tensor], step: tf.Tensor) -> Dict[str, tf.Tensor]:
    """One per-replica step: forward, loss, gradients, update. Returns scalar metrics."""

  def extra_summaries(self) -> Dict[str, float]:
    """Host-side scalars for TensorBoard (learning rate, weight norm, ...)."""

  def summarize_inputs(self) -> None:
    """Writes input summaries (e.g. augmented view pairs) into the default summary writer."""


class TaskBase:
  """Base of ContrastiveTask / SupervisedTask.

  ``config`` is the stage's frozen config; it must have ``variant``, ``init``, ``seed``,
  ``global_batch_size`` and the projection head shape (``projection_layers``,
  ``projection_dim``, ``projection_hidden_dim``).
  """

  metric_names: Sequence[str] = ("loss",)
  global_batch_size: int = 0

  def __init__(self, config, optimizer_config: optim_factory.OptimizerConfig, augment_config,
               manifest, image_size: int, precision_policy: str):
    self.config = config
    self.optimizer_config = optimizer_config
    self.augment_config = augment_config
    self.manifest = manifest
    self.image_size = image_size
    self.precision_policy = precision_policy
    self.global_batch_size = config.global_batch_size
    self.optimizer = None
    self.backbone = None
    self.projection_head = None
    self._init_notes: List[str] = []

  # -- models ----------------------------------------------------------------------------
  def build(self, strategy: tf.distribute.Strategy) -> None:
    """Backbone (seeded), the task's heads, then the optimizer over their variables."""
    del strategy
    keras.utils.set_random_seed(self.config.seed)
    self.backbone, self._init_notes = init_weights.build_backbone(
        self.config.variant, self.config.init, self.image_size)
    self._build_heads(int(self.backbone.output_channels))
    self.optimizer = self._make_optimizer()

  def _build_heads(self, width: int) -> None:
    """Builds the heads on a backbone of ``width`` output channels, and whatever else must
    be settled before the optimizer reads the trainable variables (e.g. freezing)."""
    raise NotImplementedError

  def _build_projection_head(self, width: int) -> List[tf.Tensor]:
    """Builds ``self.projection_head`` from the config's shape; returns its outputs on a
    dummy batch (index k = projection layer k, 0 = its input)."""
    self.projection_head = ProjectionHead(
        self.config.projection_layers, self.config.projection_hidden_dim or width,
        self.config.projection_dim, name="projection_head")
    return self.projection_head(tf.zeros((2, width)), training=False)

  def modules(self) -> Dict[str, keras.layers.Layer]:
    """The built models by checkpoint name, backbone first (this order is the order of
    ``trainable_variables``); heads the task does not have are left out."""
    raise NotImplementedError

  def trainable_variables(self) -> List[tf.Variable]:
    return [v for module in self.modules().values() for v in module.trainable_variables]

  def checkpoint_items(self) -> Dict[str, Any]:
    """The models and the optimizer (what a training checkpoint holds)."""
    return {**self.modules(), "optimizer": self.optimizer}

  # -- init and input --------------------------------------------------------------------
  def _restore_projection(self) -> bool:
    """Whether a checkpoint or preset init also restores the projection head."""
    raise NotImplementedError

  def initialize(self) -> List[str]:
    return self._init_notes + init_weights.load_init(
        self.config.init, self.backbone, self.projection_head,
        restore_projection=self._restore_projection())

  def _stream_options(self, input_context: Optional[tf.distribute.InputContext],
                      start_step: int) -> Dict[str, Any]:
    """Keyword arguments every ``remedis_tf.data.pipeline`` training stream takes."""
    return dict(augment=self.augment_config, global_batch_size=self.config.global_batch_size,
                seed=self.config.seed, input_context=input_context, start_step=start_step,
                max_image_size=decode.working_size(self.image_size))

  # -- optimizer -------------------------------------------------------------------------
  def _make_optimizer(self):
    """Builds the optimizer over ``trainable_variables`` and creates its slots now.

    Slots must exist before a checkpoint restore under MirroredStrategy (docs/numerics.md).
    Norm parameters and biases are excluded from weight decay / LARS trust by object.
    """
    variables = self.trainable_variables()
    exclude = optim_factory.norm_and_bias_variables(list(self.modules().values()))
    optimizer = optim_factory.build_optimizer(self.optimizer_config, self.global_batch_size,
                                              variables, exclude=exclude)
    if self.precision_policy == "mixed_float16":
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer

  def apply_loss(self, tape: tf.GradientTape, loss: tf.Tensor) -> None:
    """Differentiates ``loss`` (already scaled for the global batch) and updates.

    Keras optimizers sum gradients over replicas, so ``loss`` must be this replica's share
    of the global mean. Variables that get no gradient (e.g. projection layers past the one
    fine-tuning reads) are skipped.
    """
    variables = self.trainable_variables()
    grads = tape.gradient(loss, variables)
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    self.optimizer.apply_gradients(pairs)

  def scale_for_gradients(self, loss: tf.Tensor) -> tf.Tensor:
    """Applies float16 loss scaling when the optimizer is a LossScaleOptimizer."""
    if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
      return self.optimizer.scale_loss(loss)
    return loss

  # -- summaries -------------------------------------------------------------------------
  def extra_summaries(self) -> Dict[str, float]:
    """Learning rate and backbone weight norm, read on the host."""
    out = {}
    lr = self.optimizer.learning_rate
    out["learning_rate"] = float(lr.numpy() if hasattr(lr, "numpy") else lr)
    if self.backbone is not None and self.backbone.trainable_weights:
      out["weight_norm"] = float(tf.linalg.global_norm(
          [tf.convert_to_tensor(v) for v in self.backbone.trainable_weights]).numpy())
    return out

  def summarize_inputs(self) -> None:
    """Default: nothing."""
