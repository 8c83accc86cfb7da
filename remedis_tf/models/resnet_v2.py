"""BiT ResNet-v2 (Group Norm + Weight Standardisation) as a native Keras 3 model.

Architecture follows Kolesnikov et al. (BiT) as written out in docs/numerics.md:
pre-activation bottleneck units with the stride on the 3x3 conv, GroupNorm(32, eps 1e-5)
and weight-standardised convolutions. Input is float ``[B, H, W, 3]`` in ``[0, 1]``; the
model rescales to ``[-1, 1]`` itself.

Layer names use ``__`` where BiT's checkpoint keys use ``/`` (Keras 3 forbids ``/`` in
names); :func:`bit_variable_map` gives the exact BiT key of every variable.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import keras
import tensorflow as tf
from keras import ops

from remedis_tf.errors import ConfigError
from remedis_tf.models.group_norm import GroupNormReLU

WS_EPSILON = 1e-10
GN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
  """Shape of a BiT ResNet-v2.

  Attributes:
    units: bottleneck units per block (4 blocks).
    width_factor: BiT's width multiplier ``w``.
    base_width: root filters for ``w = 1`` (64 in BiT; smaller for test/demo variants).
    num_groups: GroupNorm groups (32 in BiT).
  """
  units: Tuple[int, int, int, int]
  width_factor: int = 1
  base_width: int = 64
  num_groups: int = 32

  @property
  def root_filters(self) -> int:
    return self.base_width * self.width_factor

  def block_filters(self, block: int) -> int:
    """Bottleneck width ``f`` of block ``block`` (1-based); the unit outputs ``4 f``."""
    return self.base_width * self.width_factor * 2 ** (block - 1)

  @property
  def output_channels(self) -> int:
    return 4 * self.block_filters(4)


_DEPTH_UNITS = {
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

# Named variants. The published ones first; ``tiny``/``small`` keep BiT's structure at a
# size that trains on a laptop CPU (used by tests and the demo).
VARIANTS: Dict[str, ResNetSpec] = {
    "r50x1": ResNetSpec(_DEPTH_UNITS[50], 1),
    "r50x3": ResNetSpec(_DEPTH_UNITS[50], 3),
    "r101x1": ResNetSpec(_DEPTH_UNITS[101], 1),
    "r101x3": ResNetSpec(_DEPTH_UNITS[101], 3),
    "r152x2": ResNetSpec(_DEPTH_UNITS[152], 2),
    "r152x4": ResNetSpec(_DEPTH_UNITS[152], 4),
    "r26x1": ResNetSpec(_DEPTH_UNITS[26], 1),
    "small": ResNetSpec((1, 1, 1, 1), 1, base_width=16, num_groups=8),
    "tiny": ResNetSpec((1, 1, 1, 1), 1, base_width=8, num_groups=4),
}


def get_spec(variant: str) -> ResNetSpec:
  """Returns the spec of a named variant (e.g. ``r50x1``), raising ConfigError if unknown."""
  key = variant.lower().replace("-", "")
  if key in VARIANTS:
    return VARIANTS[key]
  raise ConfigError(
      f"unknown backbone variant {variant!r}; known: {', '.join(sorted(VARIANTS))}")


def standardize_kernel(kernel, epsilon: float = WS_EPSILON):
  """Weight standardisation: per output channel over (H, W, I), population variance.

  Args:
    kernel: HWIO conv kernel.
  Returns:
    ``(kernel - mean) / sqrt(var + epsilon)`` in the kernel's dtype; statistics are taken
    in float32 so mixed-precision kernels are standardised accurately.
  """
  k32 = ops.cast(kernel, "float32")
  mean = ops.mean(k32, axis=(0, 1, 2), keepdims=True)
  var = ops.mean(ops.square(k32 - mean), axis=(0, 1, 2), keepdims=True)
  return ops.cast((k32 - mean) / ops.sqrt(var + epsilon), kernel.dtype)


class StandardizedConv2D(keras.layers.Conv2D):
  """Conv2D whose kernel is weight-standardised at every call (public conv hook)."""

  def convolution_op(self, inputs, kernel):
    return super().convolution_op(inputs, standardize_kernel(kernel))


def _std_conv(filters: int, size: int, stride: int, name: str) -> StandardizedConv2D:
  return StandardizedConv2D(filters, size, strides=stride, padding="valid", use_bias=False,
                            kernel_initializer="he_normal", name=name)


def _group_norm(groups: int, name: str, relu: bool = False) -> GroupNormReLU:
  # Statistics stay float32 under mixed precision (as in Keras' GroupNormalization).
  return GroupNormReLU(groups=groups, relu=relu, epsilon=GN_EPSILON, name=name)


class BottleneckUnitV2(keras.layers.Layer):
  """Pre-activation bottleneck unit: output = shortcut + c(b(a(x)))."""

  def __init__(self, filters: int, stride: int, num_groups: int, project: bool, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.stride = stride
    self.gn_a = _group_norm(num_groups, "a__group_norm", relu=True)
    self.conv_a = _std_conv(filters, 1, 1, "a__standardized_conv2d")
    self.gn_b = _group_norm(num_groups, "b__group_norm", relu=True)
    self.pad_b = keras.layers.ZeroPadding2D(1)
    self.conv_b = _std_conv(filters, 3, stride, "b__standardized_conv2d")
    self.gn_c = _group_norm(num_groups, "c__group_norm", relu=True)
    self.conv_c = _std_conv(4 * filters, 1, 1, "c__standardized_conv2d")
    self.proj = _std_conv(4 * filters, 1, stride, "a__proj__standardized_conv2d") if project else None

  def build(self, input_shape):
    # Variables from channel counts alone, in the order the call creates them (so seeded
    # initial weights are unchanged). Without this Keras 3 builds by tracing the call
    # symbolically, seconds per backbone on a 2-core CPU.
    outer = (None, None, None, input_shape[-1])
    inner = (None, None, None, self.filters)
    self.gn_a.build(outer)
    if self.proj is not None:
      self.proj.build(outer)
    for layer, shape in ((self.conv_a, outer), (self.gn_b, inner), (self.conv_b, inner),
                         (self.gn_c, inner), (self.conv_c, inner)):
      layer.build(shape)

  def call(self, x):
    pre = self.gn_a(x)  # the GroupNorm layers apply the ReLU
    shortcut = self.proj(pre) if self.proj is not None else x
    y = self.conv_a(pre)
    y = self.conv_b(self.pad_b(self.gn_b(y)))
    y = self.conv_c(self.gn_c(y))
    return ops.add(shortcut, ops.cast(y, shortcut.dtype))

  def bit_variables(self) -> Dict[str, keras.Variable]:
    """BiT key suffix (after ``unitNN/``) → variable."""
    out = {}
    for part, gn, conv in (("a", self.gn_a, self.conv_a), ("b", self.gn_b, self.conv_b),
                           ("c", self.gn_c, self.conv_c)):
      out[f"{part}/group_norm/gamma"] = gn.gamma
      out[f"{part}/group_norm/beta"] = gn.beta
      out[f"{part}/standardized_conv2d/kernel"] = conv.kernel
    if self.proj is not None:
      out["a/proj/standardized_conv2d/kernel"] = self.proj.kernel
    return out


class ResNetV2(keras.Model):
  """BiT ResNet-v2 backbone.

  Call: ``outputs = backbone(images, training=...)`` with images float ``[B,H,W,3]`` in
  ``[0,1]`` (H, W >= 32). Returns a dict:
    * ``feature_map``: ``[B, h, w, C]`` after the final GN+ReLU (h = ceil(H/32)),
    * ``pooled``: ``[B, C]`` global average of the feature map (BiT's pre-logits),
    * ``logits``: ``[B, num_classes]`` only when built with ``num_classes > 0`` (BiT head,
      a zero-initialised 1x1 conv / dense layer).
  """

  def __init__(self, variant: str = "r50x1", num_classes: int = 0,
               spec: Optional[ResNetSpec] = None, name: Optional[str] = None, **kwargs):
    super().__init__(name=name or f"bit_{variant}", **kwargs)
    self.variant = variant
    self.spec = spec or get_spec(variant)
    self.num_classes = num_classes
    s = self.spec
    self.root_pad = keras.layers.ZeroPadding2D(3, name="root_pad")
    self.root_conv = _std_conv(s.root_filters, 7, 2, "root_block__standardized_conv2d")
    self.pool_pad = keras.layers.ZeroPadding2D(1, name="pool_pad")
    self.root_pool = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="root_pool")
    self.blocks = []
    in_channels = s.root_filters
    for b, n_units in enumerate(s.units, start=1):
      filters = s.block_filters(b)
      units = []
      for u in range(1, n_units + 1):
        stride = (1 if b == 1 else 2) if u == 1 else 1
        project = u == 1 and (stride != 1 or in_channels != 4 * filters)
        unit = BottleneckUnitV2(filters, stride, s.num_groups, project,
                                name=f"block{b}__unit{u:02d}")
        # Keras 3 list attributes are invisible to tf.train.Checkpoint; an attribute per
        # unit makes every variable checkpointable (key ``block{b}_unit{u}/...``).
        setattr(self, f"block{b}_unit{u:02d}", unit)
        units.append(unit)
        in_channels = 4 * filters
      self.blocks.append(units)
    self.final_gn = _group_norm(s.num_groups, "group_norm", relu=True)
    self.head = (keras.layers.Dense(num_classes, kernel_initializer="zeros", name="head__conv2d")
                 if num_classes else None)

  @property
  def output_channels(self) -> int:
    return self.spec.output_channels

  def build(self, input_shape):
    # From channel counts, in call order (see BottleneckUnitV2.build).
    self.root_conv.build((None, None, None, input_shape[-1]))
    channels = self.spec.root_filters
    for units in self.blocks:
      for unit in units:
        unit.build((None, None, None, channels))
        channels = 4 * unit.filters
    self.final_gn.build((None, None, None, channels))
    if self.head is not None:
      self.head.build((None, channels))

  def call(self, images, training=None):
    x = ops.cast(images, self.compute_dtype) * 2.0 - 1.0
    x = self.root_conv(self.root_pad(x))
    x = self.root_pool(self.pool_pad(x))
    for units in self.blocks:
      for unit in units:
        x = unit(x)
    feature_map = self.final_gn(x)  # GroupNorm + ReLU
    pooled = ops.mean(feature_map, axis=(1, 2))
    out = {"feature_map": feature_map, "pooled": pooled}
    if self.head is not None:
      out["logits"] = self.head(pooled)
    return out

  def build_for(self, image_size: int = 64) -> "ResNetV2":
    """Creates all variables by calling the model once on zeros; returns self."""
    self(ops.zeros((1, image_size, image_size, 3)), training=False)
    return self

  def bit_variable_map(self) -> Dict[str, keras.Variable]:
    """Maps each BiT ``.npz`` key (docs/numerics.md) to this model's variable.

    The model must be built. The head kernel is stored as a Dense ``[C, classes]`` kernel;
    BiT files store it as a ``[1, 1, C, classes]`` 1x1-conv kernel (reshape on load/save).
    """
    if not self.built:
      raise RuntimeError("build the backbone (e.g. backbone.build_for()) before mapping variables")
    out = {"resnet/root_block/standardized_conv2d/kernel": self.root_conv.kernel,
           "resnet/group_norm/gamma": self.final_gn.gamma,
           "resnet/group_norm/beta": self.final_gn.beta}
    for b, units in enumerate(self.blocks, start=1):
      for u, unit in enumerate(units, start=1):
        for suffix, var in unit.bit_variables().items():
          out[f"resnet/block{b}/unit{u:02d}/{suffix}"] = var
    if self.head is not None:
      out["resnet/head/conv2d/kernel"] = self.head.kernel
      out["resnet/head/conv2d/bias"] = self.head.bias
    return out


def count_params(model: keras.Model) -> int:
  """Total number of scalar weights in a built model."""
  return int(sum(int(ops.size(v)) for v in model.weights))

