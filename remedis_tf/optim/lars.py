"""LARS (layer-wise adaptive rate scaling) as a Keras 3 optimizer.

Update for each variable ``w`` with gradient ``g`` (classic momentum, no Nesterov), as in
SimCLR and docs/numerics.md:

    g     <- g + wd * w                       (unless w is excluded from weight decay)
    trust <- eta * ||w|| / ||g||  if ||w|| > 0 and ||g|| > 0, else 1
             (1 if w is excluded from layer adaptation)
    v     <- m * v + lr * trust * g
    w     <- w - v

Exclusions are given as variable OBJECTS (Keras 3 variable names carry no layer path, so
name patterns cannot tell a BatchNorm beta from anything else). ``update_step`` receives a
raw ``tf.Variable`` (a per-replica component under MirroredStrategy), so the per-variable
decisions are made once in ``build()`` and looked up by the optimizer's variable index.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import keras
import tensorflow as tf
from keras import ops


class LARS(keras.optimizers.Optimizer):
  """Keras 3 LARS optimizer with object-based exclusions.

  Args:
    learning_rate: float or ``LearningRateSchedule``.
    momentum: classic momentum ``m`` in [0, 1).
    weight_decay: L2 coefficient added to the gradient (coupled, as in SimCLR; NOT the
      decoupled Keras ``weight_decay`` of the base class).
    trust_coefficient: ``eta``.
    exclude_from_weight_decay: variables (objects) that get no weight decay.
    exclude_from_layer_adaptation: variables that get trust 1; ``None`` means the same set
      as ``exclude_from_weight_decay`` (SimCLR's convention).
    name, **kwargs: passed to ``keras.optimizers.Optimizer`` (clipping, EMA, loss scaling;
      ``weight_decay`` must not be passed there).

  The exclusions cannot be serialised by ``get_config`` (they are live objects); rebuild
  them from the model (``remedis_tf.optim.factory.norm_and_bias_variables``). Momentum
  slots are optimizer variables and are saved by ``tf.train.Checkpoint(optimizer=...)``;
  under MirroredStrategy call ``build(model.trainable_variables)`` before restoring.
  """

  def __init__(self, learning_rate=0.1, momentum: float = 0.9, weight_decay: float = 0.0,
               trust_coefficient: float = 0.001,
               exclude_from_weight_decay: Sequence = (),
               exclude_from_layer_adaptation: Optional[Sequence] = None,
               name: str = "lars", **kwargs):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    if not 0.0 <= float(momentum) < 1.0:
      raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}")
    if float(weight_decay) < 0.0:
      raise ValueError(f"LARS weight_decay must be >= 0, got {weight_decay}")
    if float(trust_coefficient) <= 0.0:
      raise ValueError(f"LARS trust_coefficient must be > 0, got {trust_coefficient}")
    self.momentum = float(momentum)
    self.lars_weight_decay = float(weight_decay)
    self.trust_coefficient = float(trust_coefficient)
    wd_excluded = tuple(exclude_from_weight_decay or ())
    adapt_excluded = (wd_excluded if exclude_from_layer_adaptation is None
                      else tuple(exclude_from_layer_adaptation))
    # Keys only (never the variables themselves): storing model variables on the
    # optimizer would make the checkpoint track them a second time.
    self._no_wd_keys = frozenset(self._var_key(v) for v in wd_excluded)
    self._no_adapt_keys = frozenset(self._var_key(v) for v in adapt_excluded)
    self._use_wd_by_index = ()
    self._adapt_by_index = ()

  def build(self, variables: Iterable):
    """Creates momentum slots and fixes each variable's exclusions (by index)."""
    if self.built:
      return
    variables = list(variables)
    super().build(variables)
    self.momentums = self.add_optimizer_variables(variables, "momentum")
    keys = [self._var_key(v) for v in variables]
    self._use_wd_by_index = tuple(k not in self._no_wd_keys for k in keys)
    self._adapt_by_index = tuple(k not in self._no_adapt_keys for k in keys)

  def update_step(self, gradient, variable, learning_rate):
    """One LARS update of ``variable`` (see the module docstring for the rule)."""
    index = self._get_variable_index(variable)
    dtype = variable.dtype
    if isinstance(gradient, tf.IndexedSlices):
      gradient = tf.convert_to_tensor(gradient)
    lr = ops.cast(learning_rate, dtype)
    grad = ops.cast(gradient, dtype)
    if self._use_wd_by_index[index] and self.lars_weight_decay > 0.0:
      grad = grad + ops.cast(self.lars_weight_decay, dtype) * variable
    if self._adapt_by_index[index]:
      w_norm = ops.sqrt(ops.sum(ops.square(variable)))
      g_norm = ops.sqrt(ops.sum(ops.square(grad)))
      both_positive = ops.logical_and(w_norm > 0.0, g_norm > 0.0)
      # Safe denominator so the unused branch of the select is never 0/0.
      ratio = ops.cast(self.trust_coefficient, dtype) * w_norm / ops.where(
          both_positive, g_norm, ops.ones_like(g_norm))
      trust = ops.where(both_positive, ratio, ops.ones_like(ratio))
      grad = grad * trust
    velocity = self.momentums[index]
    self.assign(velocity, ops.cast(self.momentum, dtype) * velocity + lr * grad)
    self.assign_sub(variable, velocity)

  def get_config(self):
    config = super().get_config()
    config.update({
        "momentum": self.momentum,
        "weight_decay": self.lars_weight_decay,
        "trust_coefficient": self.trust_coefficient,
    })
    return config
