"""Pieces every training task shares: optimizer wiring, gradient application, summaries."""

from __future__ import annotations

from typing import Dict, List, Sequence

import keras
import tensorflow as tf

from remedis_tf.optim import factory as optim_factory


class TaskBase:
  """Base of ContrastiveTask / SupervisedTask (see ``remedis_tf.train.loop.Task``)."""

  metric_names: Sequence[str] = ("loss",)
  global_batch_size: int = 0

  def __init__(self):
    self.optimizer = None
    self.backbone = None

  # -- optimizer -------------------------------------------------------------------------
  def _make_optimizer(self, optimizer_config, modules: Sequence, precision_policy: str):
    """Builds the optimizer over ``trainable_variables`` and creates its slots now.

    Slots must exist before a checkpoint restore under MirroredStrategy (DESIGN.md §6).
    Norm parameters and biases are excluded from weight decay / LARS trust by object.
    """
    variables = self.trainable_variables()
    exclude = optim_factory.norm_and_bias_variables(list(modules))
    optimizer = optim_factory.build_optimizer(optimizer_config, self.global_batch_size,
                                              variables, exclude=exclude)
    if precision_policy == "mixed_float16":
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer

  def trainable_variables(self) -> List[tf.Variable]:
    raise NotImplementedError

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
