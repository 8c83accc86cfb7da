"""Optimizer from a frozen config: LARS / SGD / AdamW / LAMB with a scaled, scheduled lr.

Weight-decay (and, for LARS, trust-ratio) exclusions are chosen by variable OBJECT:
:func:`norm_and_bias_variables` walks a model's layers and returns the GN/BN/LN
parameters and every bias, which callers pass as ``exclude``. Keras 3 variable names carry
no layer path, so name patterns are not used anywhere.

Weight decay (``OptimizerConfig.weight_decay_mode``):

* ``"l2"`` — classic L2 regularisation: ``wd·w`` is added to the gradient (the gradient of
  ``wd/2·||w||²`` in the loss) before momentum. Under momentum m the decay accumulates
  like the gradient, ≈ 1/(1 − m) = 10× stronger at m = 0.9 than the decoupled form with
  the same coefficient. BiT's upstream recipe (SGD, wd 1e-4 as an L2 loss term, like the
  standard ResNet recipe) and SimCLR's LARS (``wd·w`` added before the trust ratio) use
  it. Available for SGD and LARS.
* ``"decoupled"`` — Keras' decoupled decay ``w -= lr·wd·w`` each step, outside the
  momentum (Loshchilov & Hutter). AdamW's and LAMB's definition. Available for SGD, AdamW
  and LAMB.

The default ``"recipe"`` resolves to the named optimizer's recipe: ``l2`` for SGD and
LARS, ``decoupled`` for AdamW and LAMB. LAMB's trust ratio is applied to every variable
(Keras' LAMB has no adaptation exclusion).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

from remedis_tf.errors import ConfigError
from remedis_tf.optim import schedules
from remedis_tf.optim.lars import LARS

OPTIMIZERS = ("lars", "sgd", "adamw", "lamb")
WEIGHT_DECAY_MODES = ("recipe", "l2", "decoupled")
# What "recipe" means per optimizer, and which modes each supports.
RECIPE_WEIGHT_DECAY_MODE = {"sgd": "l2", "lars": "l2", "adamw": "decoupled",
                            "lamb": "decoupled"}
_SUPPORTED_WEIGHT_DECAY_MODES = {"sgd": ("l2", "decoupled"), "lars": ("l2",),
                                 "adamw": ("decoupled",), "lamb": ("decoupled",)}
SCHEDULES = ("warmup_cosine", "bit_hyperrule", "constant")
# Where the BiT-HyperRule's three decays fall as fractions of the schedule (6000/20000 etc.)
# when only warmup_steps/total_steps are given.
_HYPERRULE_DECAY_FRACTIONS = (0.3, 0.6, 0.9)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """How to build the optimizer and its learning-rate schedule.

  Attributes:
    name: "lars" | "sgd" | "adamw" | "lamb".
    base_lr: learning rate before batch scaling (0.3 for SimCLR/REMEDIS LARS, 0.003 for
      BiT-HyperRule SGD).
    lr_scaling: "linear" (base·B/reference_batch_size) | "sqrt" (base·√B) | "none".
    schedule: "warmup_cosine" | "bit_hyperrule" | "constant".
    warmup_steps: linear warmup length in optimizer steps ("constant" requires 0).
    total_steps: schedule length in optimizer steps.
    weight_decay: decay coefficient wd (>= 0; 0 disables it); how it is applied is
      ``weight_decay_mode``.
    weight_decay_mode: "l2" (wd·w added to the gradient before momentum, i.e. an L2 loss
      term; BiT upstream SGD and SimCLR LARS) | "decoupled" (Keras/AdamW: w -= lr·wd·w
      each step, outside momentum; about 10x weaker than l2 under momentum 0.9) |
      "recipe" (the optimizer's recipe: l2 for sgd and lars, decoupled for adamw and
      lamb; the resolved value is what the config stores). lars supports only l2, adamw
      and lamb only decoupled.
    momentum: momentum for LARS and SGD, in [0, 1).
    trust_coefficient: LARS eta.
    nesterov: Nesterov momentum (SGD only; LARS is classic momentum).
    reference_batch_size: batch of the "linear" rule; None → 512 for "bit_hyperrule"
      (BiT's convention) and 256 otherwise (SimCLR's).
    boundaries: "bit_hyperrule" steps (warmup end, decays..., end == total_steps); when
      given, boundaries[0] is the warmup end and warmup_steps is not used; empty →
      [warmup_steps, 0.3·T, 0.6·T, 0.9·T, T] with T = total_steps.
  """
  name: str = "lars"
  base_lr: float = 0.3
  lr_scaling: str = "linear"
  schedule: str = "warmup_cosine"
  warmup_steps: int = 0
  total_steps: int = 1000
  weight_decay: float = 1e-6
  weight_decay_mode: str = "recipe"
  momentum: float = 0.9
  trust_coefficient: float = 0.001
  nesterov: bool = False
  reference_batch_size: Optional[int] = None
  boundaries: Tuple[int, ...] = ()

  # A run made longer on resume stretches its schedule with it: the binaries derive the
  # schedule length, its warmup and the HyperRule boundaries from the step count, and the
  # schedule is a function of the step, so the resumed run follows the new one from there.
  RESUMABLE_FIELDS: ClassVar[Tuple[str, ...]] = ("total_steps", "warmup_steps", "boundaries")

  def __post_init__(self):
    def bad(field, why):
      raise ConfigError(why, field=field, value=getattr(self, field),
                        config="OptimizerConfig")
    if self.name not in OPTIMIZERS:
      bad("name", f"unknown optimizer; valid: {', '.join(OPTIMIZERS)}")
    if self.lr_scaling not in schedules.LR_SCALINGS:
      bad("lr_scaling", f"unknown scaling; valid: {', '.join(schedules.LR_SCALINGS)}")
    if self.schedule not in SCHEDULES:
      bad("schedule", f"unknown schedule; valid: {', '.join(SCHEDULES)}")
    if not self.base_lr > 0:
      bad("base_lr", "must be > 0")
    if self.total_steps <= 0:
      bad("total_steps", "must be > 0")
    if not 0 <= self.warmup_steps <= self.total_steps:
      bad("warmup_steps", f"must be in [0, total_steps={self.total_steps}]")
    if self.schedule == "constant" and self.warmup_steps:
      bad("warmup_steps", "must be 0 for the constant schedule (use warmup_cosine)")
    if self.weight_decay < 0:
      bad("weight_decay", "must be >= 0")
    if self.weight_decay_mode not in WEIGHT_DECAY_MODES:
      bad("weight_decay_mode", f"unknown mode; valid: {', '.join(WEIGHT_DECAY_MODES)}")
    if self.weight_decay_mode == "recipe":
      object.__setattr__(self, "weight_decay_mode", RECIPE_WEIGHT_DECAY_MODE[self.name])
    if self.weight_decay_mode not in _SUPPORTED_WEIGHT_DECAY_MODES[self.name]:
      bad("weight_decay_mode", f"{self.name} supports "
          f"{' or '.join(_SUPPORTED_WEIGHT_DECAY_MODES[self.name])}")
    if not 0 <= self.momentum < 1:
      bad("momentum", "must be in [0, 1)")
    if not self.trust_coefficient > 0:
      bad("trust_coefficient", "must be > 0")
    if self.nesterov and self.name != "sgd":
      bad("nesterov", f"only supported by sgd, not {self.name}")
    if self.reference_batch_size is not None and self.reference_batch_size <= 0:
      bad("reference_batch_size", "must be > 0")
    if self.boundaries:
      if self.schedule != "bit_hyperrule":
        bad("boundaries", "only used by the bit_hyperrule schedule")
      try:
        bounds = schedules.check_boundaries(self.boundaries)
      except ConfigError as e:
        bad("boundaries", str(e))
      if bounds[-1] != self.total_steps:
        bad("boundaries", f"last boundary must equal total_steps={self.total_steps}")
    elif self.schedule == "bit_hyperrule":
      try:
        self.hyperrule_boundaries()
      except ConfigError:
        bad("warmup_steps", f"too long for a bit_hyperrule schedule of {self.total_steps} "
            f"steps (must end before 0.3·total_steps)")

  def hyperrule_boundaries(self) -> Tuple[int, ...]:
    """The bit_hyperrule steps: ``boundaries`` or ones derived from warmup/total steps."""
    if self.boundaries:
      return tuple(int(b) for b in self.boundaries)
    total = self.total_steps
    derived = ((self.warmup_steps,) + tuple(int(round(f * total))
                                            for f in _HYPERRULE_DECAY_FRACTIONS) + (total,))
    return schedules.check_boundaries(derived)

  def peak_learning_rate(self, global_batch_size: int) -> float:
    """``base_lr`` scaled for ``global_batch_size`` by ``lr_scaling``."""
    reference = self.reference_batch_size or (
        schedules.HYPERRULE_REFERENCE_BATCH if self.schedule == "bit_hyperrule" else 256)
    return schedules.scaled_learning_rate(self.base_lr, global_batch_size, self.lr_scaling,
                                          reference)


  def schedule_summary(self, global_batch_size: int) -> Dict[str, object]:
    """The effective learning rate: ``{"peak_learning_rate", "scaling", "schedule"}``
    (what a run records in ``config.json`` and prints at its start)."""
    peak = self.peak_learning_rate(global_batch_size)
    reference = self.reference_batch_size or (
        schedules.HYPERRULE_REFERENCE_BATCH if self.schedule == "bit_hyperrule" else 256)
    scaling = {"linear": f"{self.base_lr:g} x batch {global_batch_size} / {reference}",
               "sqrt": f"{self.base_lr:g} x sqrt(batch {global_batch_size})",
               "none": f"{self.base_lr:g}, not scaled"}[self.lr_scaling]
    if self.schedule == "bit_hyperrule":
      b = self.hyperrule_boundaries()
      shape = (f"bit_hyperrule: linear warmup to step {b[0]}, x0.1 at steps "
               f"{', '.join(map(str, b[1:-1]))}, end at step {b[-1]}")
    elif self.schedule == "warmup_cosine":
      shape = (f"warmup_cosine: linear warmup to step {self.warmup_steps}, cosine decay to 0 "
               f"at step {self.total_steps}")
    else:
      shape = f"constant to step {self.total_steps}"
    return {"peak_learning_rate": float(peak), "scaling": scaling, "schedule": shape}

  def small_learning_rate_warning(self, global_batch_size: int) -> Optional[str]:
    """A warning when batch scaling shrinks ``base_lr`` by more than 16x (e.g. HyperRule's
    0.003 x 8/512 = 4.7e-5, at which a short fine-tune barely moves); None otherwise."""
    peak = self.peak_learning_rate(global_batch_size)
    if self.lr_scaling == "none" or peak * 16 >= self.base_lr:
      return None
    return (f"WARNING: the peak learning rate is {peak:.3g}, {self.base_lr / peak:.0f}x below "
            f"the recipe's {self.base_lr:g}, because --lr_scaling={self.lr_scaling} scales it "
            f"to the batch of {global_batch_size}; the recipe was made for larger batches. "
            "For a small batch consider --lr_scaling=none or a larger --learning_rate")


def build_learning_rate(cfg: OptimizerConfig, global_batch_size: int):
  """The float or ``LearningRateSchedule`` the optimizer gets (peak = scaled base lr)."""
  peak = cfg.peak_learning_rate(global_batch_size)
  if cfg.schedule == "warmup_cosine":
    return schedules.WarmupCosine(peak, cfg.warmup_steps, cfg.total_steps)
  if cfg.schedule == "bit_hyperrule":
    return schedules.BiTHyperRuleSchedule(peak, cfg.hyperrule_boundaries())
  return float(peak)


def build_optimizer(cfg: OptimizerConfig, global_batch_size: int,
                    variables: Optional[Iterable] = None,
                    exclude: Sequence = ()) -> keras.optimizers.Optimizer:
  """Builds the optimizer described by ``cfg``.

  Args:
    cfg: the config.
    global_batch_size: batch summed over replicas (drives the lr scaling).
    variables: if given, the optimizer is built on them now (create it inside
      ``strategy.scope()``); do this before ``tf.train.Checkpoint.restore`` under
      MirroredStrategy (docs/numerics.md, "Things measured").
    exclude: variable objects excluded from weight decay (and from LARS trust scaling),
      usually ``norm_and_bias_variables(model)``.
  """
  lr = build_learning_rate(cfg, global_batch_size)
  exclude = list(exclude)
  wd = cfg.weight_decay or None  # Keras treats None as "no decay"
  if cfg.name == "lars":
    optimizer = LARS(lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                     trust_coefficient=cfg.trust_coefficient,
                     exclude_from_weight_decay=exclude)
  elif cfg.name == "sgd" and cfg.weight_decay_mode == "l2" and cfg.weight_decay > 0:
    optimizer = L2SGD(lr, momentum=float(cfg.momentum), nesterov=cfg.nesterov,
                      l2=cfg.weight_decay, exclude_from_weight_decay=exclude)
  else:
    if cfg.name == "sgd":
      optimizer = keras.optimizers.SGD(lr, momentum=float(cfg.momentum), nesterov=cfg.nesterov,
                                       weight_decay=wd)
    elif cfg.name == "adamw":
      optimizer = keras.optimizers.AdamW(lr, weight_decay=float(cfg.weight_decay))
    else:
      optimizer = keras.optimizers.Lamb(lr, weight_decay=wd)
    optimizer.exclude_from_weight_decay(var_list=exclude)
  if variables is not None:
    optimizer.build(list(variables))
  return optimizer


class L2SGD(keras.optimizers.SGD):
  """Keras SGD (momentum, Nesterov) with L2 weight decay coupled into the gradient.

  Each step ``g <- g + l2·w`` (unless ``w`` is excluded), then Keras' SGD update
  (``m <- momentum·m − lr·g; w <- w + m``): exactly SGD on ``loss + l2/2·||w||²``.
  Exclusions are variable OBJECTS, resolved to optimizer indices in ``build()`` (as in
  :class:`remedis_tf.optim.lars.LARS`: ``update_step`` gets raw variables). Keras'
  own decoupled ``weight_decay`` stays off.
  """

  def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False,
               l2: float = 0.0, exclude_from_weight_decay: Sequence = (),
               name: str = "l2_sgd", **kwargs):
    super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                     name=name, **kwargs)
    if float(l2) < 0.0:
      raise ValueError(f"l2 must be >= 0, got {l2}")
    self.l2 = float(l2)
    # Keys only: holding the variables would make checkpoints track them twice.
    self._no_l2_keys = frozenset(self._var_key(v) for v in exclude_from_weight_decay)
    self._use_l2_by_index = ()

  def build(self, variables: Iterable):
    if self.built:
      return
    variables = list(variables)
    super().build(variables)
    self._use_l2_by_index = tuple(self._var_key(v) not in self._no_l2_keys
                                  for v in variables)

  def update_step(self, gradient, variable, learning_rate):
    if self.l2 > 0.0 and self._use_l2_by_index[self._get_variable_index(variable)]:
      if isinstance(gradient, tf.IndexedSlices):
        gradient = tf.convert_to_tensor(gradient)
      gradient = (keras.ops.cast(gradient, variable.dtype)
                  + keras.ops.cast(self.l2, variable.dtype) * variable)
    super().update_step(gradient, variable, learning_rate)

  def get_config(self):
    config = super().get_config()
    config["l2"] = self.l2
    return config


_NORM_LAYERS = (keras.layers.GroupNormalization, keras.layers.BatchNormalization,
                keras.layers.LayerNormalization)


def _all_layers(model_or_layers) -> List[keras.layers.Layer]:
  roots = ([model_or_layers] if isinstance(model_or_layers, keras.layers.Layer)
           else list(model_or_layers))
  layers = []
  for root in roots:
    if not isinstance(root, keras.layers.Layer):
      raise TypeError(f"expected Keras layers/models, got {type(root).__name__}")
    # Keras 3 has no public recursive layer listing (Model.layers is one level deep).
    layers.extend(root._flatten_layers(include_self=True, recursive=True))
  return layers


def norm_and_bias_variables(
    model_or_layers: Union[keras.layers.Layer, Iterable[keras.layers.Layer]]) -> list:
  """Normalisation parameters and biases of (built) layers, chosen by object.

  Returns, without duplicates and in layer order: gamma/beta of every GroupNormalization,
  BatchNormalization and LayerNormalization layer, and the bias of every layer that has
  one (Dense, Conv, ...). BatchNorm moving statistics are not returned (not trainable).
  """
  found, seen = [], set()

  def add(variable):
    if isinstance(variable, keras.Variable) and id(variable) not in seen:
      seen.add(id(variable))
      found.append(variable)

  for layer in _all_layers(model_or_layers):
    if isinstance(layer, _NORM_LAYERS):
      add(getattr(layer, "gamma", None))
      add(getattr(layer, "beta", None))
    else:
      add(getattr(layer, "bias", None))
  return found
