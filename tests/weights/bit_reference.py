"""An independent, functional BiT ResNet-v2 for tests.

Written from the architecture description in docs/numerics.md with plain ``tf.nn`` ops over a
dict of arrays keyed by BiT's checkpoint keys, so it checks both our Keras architecture and
our key naming. Also writes BiT look-alike artifacts (``.npz`` files and SavedModels with
BiT-like variable names) because nothing can be downloaded in tests.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

# (units per block, root filters, GroupNorm groups) of the test-sized variants.
TINY = ((1, 1, 1, 1), 8, 4)
SMALL = ((1, 1, 1, 1), 16, 8)
R26_NARROW = ((2, 2, 2, 2), 8, 4)  # more than one unit per block, still tiny


def bit_shapes(units, root: int, num_classes: int = 0) -> Dict[str, Tuple[int, ...]]:
  """BiT key → shape (file layout) for the given architecture."""
  shapes = {"resnet/root_block/standardized_conv2d/kernel": (7, 7, 3, root)}
  cin = root
  for b, n in enumerate(units, start=1):
    f = root * 2 ** (b - 1)
    for u in range(1, n + 1):
      p = f"resnet/block{b}/unit{u:02d}"
      shapes[f"{p}/a/group_norm/gamma"] = (cin,)
      shapes[f"{p}/a/group_norm/beta"] = (cin,)
      shapes[f"{p}/a/standardized_conv2d/kernel"] = (1, 1, cin, f)
      shapes[f"{p}/b/group_norm/gamma"] = (f,)
      shapes[f"{p}/b/group_norm/beta"] = (f,)
      shapes[f"{p}/b/standardized_conv2d/kernel"] = (3, 3, f, f)
      shapes[f"{p}/c/group_norm/gamma"] = (f,)
      shapes[f"{p}/c/group_norm/beta"] = (f,)
      shapes[f"{p}/c/standardized_conv2d/kernel"] = (1, 1, f, 4 * f)
      if u == 1:  # every first unit changes channels or strides
        shapes[f"{p}/a/proj/standardized_conv2d/kernel"] = (1, 1, cin, 4 * f)
      cin = 4 * f
  shapes["resnet/group_norm/gamma"] = (cin,)
  shapes["resnet/group_norm/beta"] = (cin,)
  if num_classes:
    shapes["resnet/head/conv2d/kernel"] = (1, 1, cin, num_classes)
    shapes["resnet/head/conv2d/bias"] = (num_classes,)
  return shapes


def random_params(arch, num_classes: int = 0, seed: int = 0) -> Dict[str, np.ndarray]:
  """Random float32 BiT parameters for ``arch = (units, root, groups)``."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in bit_shapes(arch[0], arch[1], num_classes).items():
    if key.endswith("gamma"):
      v = 1.0 + 0.2 * rng.standard_normal(shape)
    elif key.endswith("beta") or key.endswith("bias"):
      v = 0.2 * rng.standard_normal(shape)
    elif key.startswith("resnet/head"):
      v = 0.05 * rng.standard_normal(shape)
    else:
      v = rng.standard_normal(shape)
    out[key] = v.astype(np.float32)
  return out


def _std_conv_eps(x, kernel, stride=1, epsilon=1e-10, standardize=True):
  w = kernel
  if standardize:
    mean, var = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
    w = (kernel - mean) / tf.sqrt(var + epsilon)
  return tf.nn.conv2d(x, w, strides=stride, padding="VALID")


def _gn(x, gamma, beta, groups):
  shape = tf.shape(x)
  c = x.shape[-1]
  g = tf.reshape(x, [shape[0], shape[1], shape[2], groups, c // groups])
  mean, var = tf.nn.moments(g, axes=[1, 2, 4], keepdims=True)
  g = (g - mean) * tf.math.rsqrt(var + 1e-5)
  return tf.reshape(g, shape) * gamma + beta


def _pad(x, n):
  return tf.pad(x, [[0, 0], [n, n], [n, n], [0, 0]])


def forward(params, images_m11, arch, ws_epsilon=1e-10, dtype=tf.float64,
            weight_standardization=True):
  """Raw BiT forward on images already in [-1, 1].

  ``ws_epsilon`` is added to the kernel variance in weight standardisation (BiT: 1e-10,
  timm's BiT port: 1e-8). Computes in ``dtype`` (float64 by default, so that a float32
  model is compared against the exact function, not against another float32 rounding;
  ``None`` keeps the inputs' dtype). ``weight_standardization=False`` gives a deliberately
  wrong BiT, for checking that a tolerance still catches a wrong model. Returns
  ``(feature_map, pooled, logits_or_None)``.
  """
  units, _, groups = arch
  if dtype is not None:
    params = {k: tf.cast(v, dtype) for k, v in params.items()}
    images_m11 = tf.cast(images_m11, dtype)
  p = params
  _std_conv = functools.partial(_std_conv_eps, epsilon=ws_epsilon,
                                standardize=weight_standardization)
  x = _std_conv(_pad(images_m11, 3), p["resnet/root_block/standardized_conv2d/kernel"], 2)
  x = tf.nn.max_pool2d(_pad(x, 1), 3, 2, "VALID")
  for b, n in enumerate(units, start=1):
    for u in range(1, n + 1):
      k = f"resnet/block{b}/unit{u:02d}"
      stride = 2 if (u == 1 and b > 1) else 1
      pre = tf.nn.relu(_gn(x, p[f"{k}/a/group_norm/gamma"], p[f"{k}/a/group_norm/beta"], groups))
      proj = p.get(f"{k}/a/proj/standardized_conv2d/kernel")
      shortcut = _std_conv(pre, proj, stride) if proj is not None else x
      y = _std_conv(pre, p[f"{k}/a/standardized_conv2d/kernel"])
      y = tf.nn.relu(_gn(y, p[f"{k}/b/group_norm/gamma"], p[f"{k}/b/group_norm/beta"], groups))
      y = _std_conv(_pad(y, 1), p[f"{k}/b/standardized_conv2d/kernel"], stride)
      y = tf.nn.relu(_gn(y, p[f"{k}/c/group_norm/gamma"], p[f"{k}/c/group_norm/beta"], groups))
      y = _std_conv(y, p[f"{k}/c/standardized_conv2d/kernel"])
      x = shortcut + y
  fmap = tf.nn.relu(_gn(x, p["resnet/group_norm/gamma"], p["resnet/group_norm/beta"], groups))
  pooled = tf.reduce_mean(fmap, axis=[1, 2])
  logits = None
  if "resnet/head/conv2d/kernel" in p:
    kernel = p["resnet/head/conv2d/kernel"]
    logits = tf.matmul(pooled, tf.reshape(kernel, kernel.shape[2:])) + p["resnet/head/conv2d/bias"]
  return fmap, pooled, logits


def write_npz(params: Dict[str, np.ndarray], path: str) -> str:
  np.savez(path, **params)
  return path


class _HubLike(tf.Module):
  """A SavedModel root like the published BiT/REMEDIS modules: ``__call__`` on [0,1]."""

  def __init__(self, params, arch, name_fn, output="feature_map"):
    super().__init__()
    self._keys = list(params)
    self.params_list = []
    for key in self._keys:
      value = params[key]
      vname = name_fn(key)
      if vname.endswith("head/dense/kernel"):  # TF2-Keras BiT heads are Dense [C, K]
        value = value.reshape(value.shape[2:])
      self.params_list.append(tf.Variable(value, name=vname))
    self._arch = arch
    self._output = output

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
  def __call__(self, images):
    p = {}
    for key, var in zip(self._keys, self.params_list):
      p[key] = tf.reshape(var, (1, 1) + tuple(var.shape)) if var.shape.rank == 2 else var
    fmap, pooled, _ = forward(p, images * 2.0 - 1.0, self._arch, dtype=None)
    return fmap if self._output == "feature_map" else pooled


def export_savedmodel(params, arch, out_dir: str,
                      name_fn: Optional[Callable[[str], str]] = None,
                      output: str = "feature_map") -> str:
  """Writes a hub-like SavedModel whose tf.Variable names are ``name_fn(bit_key)``."""
  module = _HubLike(params, arch, name_fn or (lambda k: k), output)
  tf.saved_model.save(module, out_dir)
  return out_dir


def tf2_keras_name(key: str) -> str:
  """Mimics names in TF2-Keras BiT exports: model-name scope, ``head/dense``, ``:0``."""
  name = "resnet50/" + key[len("resnet/"):]
  return name.replace("head/conv2d/", "head/dense/")


def short_unit_name(key: str) -> str:
  """Another plausible naming: an outer scope and un-padded unit numbers."""
  return "module/" + re.sub(r"unit0*(\d+)", r"unit\1", key)


# Tolerance of a float32 BiT forward against the float64 reference, relative to the output's
# scale (max |reference|). Measured, not derived (a worst-case bound for ~17 float32
# conv/GroupNorm layers with fan-in up to 576 is ~1e-3, far looser than what happens):
# max |model - float64 reference| / max |reference| over seeds 0-3 x (tiny, r26_narrow) x
# (feature map, pooled, logits) was <= 4.2e-6 in every numerics-matrix row (oneDNN on/off,
# 1 thread, ISA caps AVX2/AVX-512; AMD EPYC AVX2, 2026-12-03); the float32 reference itself is
# off by as much, and issue 25's Intel AMX run (1.25e-5 absolute against the float32
# reference on features of size ~3-6) is of the same order. 1e-4 leaves >= 20x margin;
# a wrong model (no weight standardisation, a swapped key) is off by > 1e-2.
REL_TOL = 1e-4


def rel_diff(a, b) -> float:
  """max |a - b| / max |b|: the error relative to the output's scale."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30)


def assert_close(a, b, rtol=REL_TOL):
  """``a`` matches ``b`` to ``rtol`` of ``b``'s scale (see REL_TOL)."""
  diff = rel_diff(a, b)
  assert diff <= rtol, f"max abs diff / max |reference| = {diff:.3g} > {rtol}"

