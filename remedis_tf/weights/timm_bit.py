"""timm's BiT weights (``resnetv2_{50x1,50x3,101x1,101x3,152x2,152x4}_bit``) → our ResNetV2.

timm (pytorch-image-models, ``timm/models/resnetv2.py``) holds BiT as a PyTorch state dict.
Key mapping (timm → BiT key, see docs/weights.md), with ``s = b - 1``, ``m = u - 1``:

  ``stem.conv.weight``                         → ``resnet/root_block/standardized_conv2d/kernel``
  ``stages.s.blocks.m.norm1.{weight,bias}``    → ``resnet/block{b}/unit{u:02d}/a/group_norm/{gamma,beta}``
  ``stages.s.blocks.m.conv1.weight``           → ``…/a/standardized_conv2d/kernel``
  ``stages.s.blocks.m.norm2`` / ``conv2``      → ``…/b/…``;  ``norm3`` / ``conv3`` → ``…/c/…``
  ``stages.s.blocks.m.downsample.conv.weight`` → ``…/a/proj/standardized_conv2d/kernel``
  ``norm.{weight,bias}``                       → ``resnet/group_norm/{gamma,beta}``
  ``head.fc.{weight,bias}``                    → ``resnet/head/conv2d/{kernel,bias}``

Conv kernels are OIHW in timm and HWIO here (``transpose(2, 3, 1, 0)``); the head is a 1x1
conv ``[K, C, 1, 1]`` (or a Linear ``[K, C]``). Architecture matches ours: timm's BiT uses
stem_type ``fixed`` (7x7/2 conv padded 3, zero pad 1, 3x3/2 max-pool), pre-activation
bottlenecks with the stride on the 3x3 conv, GroupNorm(32, eps 1e-5) and inputs scaled to
[-1, 1] (mean = std = 0.5). One numerical difference: timm's ``StdConv2d`` for BiT adds
eps = 1e-8 to the kernel variance, ours (and BiT's original TF code) 1e-10; see
docs/weights.md for its size.

Reading: ``.safetensors`` with our numpy reader (no torch needed); ``.pth`` / ``.pt`` /
``.bin`` only when PyTorch is importable.
"""

from __future__ import annotations

import io
import re
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf.errors import CheckpointError
from remedis_tf.models import resnet_v2
from remedis_tf.weights import bit_npz, differences, safetensors_io

TIMM_EPSILON = 1e-8  # timm's StdConv2d eps for BiT (ours: resnet_v2.WS_EPSILON = 1e-10)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"

_PART = {"norm1": ("a", "group_norm"), "conv1": ("a", "standardized_conv2d"),
         "norm2": ("b", "group_norm"), "conv2": ("b", "standardized_conv2d"),
         "norm3": ("c", "group_norm"), "conv3": ("c", "standardized_conv2d"),
         "downsample.conv": ("a/proj", "standardized_conv2d")}
_PARAM = {("group_norm", "weight"): "gamma", ("group_norm", "bias"): "beta",
          ("standardized_conv2d", "weight"): "kernel"}
_BLOCK_RE = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(norm[123]|conv[123]|downsample\.conv)"
                       r"\.(weight|bias)$")
_FIXED = {"stem.conv.weight": bit_npz.ROOT_KERNEL,
          "norm.weight": "resnet/group_norm/gamma", "norm.bias": "resnet/group_norm/beta",
          "head.fc.weight": bit_npz.HEAD_KERNEL, "head.fc.bias": bit_npz.HEAD_BIAS}
_FIXED_INV = {v: k for k, v in _FIXED.items()}
_BIT_UNIT_RE = re.compile(r"^resnet/block(\d+)/unit(\d+)/(a/proj|a|b|c)/(group_norm|"
                          r"standardized_conv2d)/(gamma|beta|kernel)$")
_TIMM_NAMES = ("resnetv2_50x1_bit", "resnetv2_50x3_bit", "resnetv2_101x1_bit",
               "resnetv2_101x3_bit", "resnetv2_152x2_bit", "resnetv2_152x4_bit")


def timm_key_to_bit(key: str) -> Optional[str]:
  """The BiT key of a timm BiT state-dict key, or None when it is not one."""
  if key in _FIXED:
    return _FIXED[key]
  m = _BLOCK_RE.match(key)
  if not m:
    return None
  stage, block, module, param = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
  part, kind = _PART[module]
  name = _PARAM.get((kind, param))
  if name is None:  # e.g. a conv bias: BiT's convs have none
    return None
  return f"resnet/block{stage + 1}/unit{block + 1:02d}/{part}/{kind}/{name}"


def bit_key_to_timm(key: str) -> str:
  """Inverse of :func:`timm_key_to_bit` (ValueError for a key that is not BiT's)."""
  if key in _FIXED_INV:
    return _FIXED_INV[key]
  m = _BIT_UNIT_RE.match(key)
  if not m:
    raise ValueError(f"not a BiT key: {key}")
  b, u, part, kind, name = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4), m.group(5)
  module = next(mod for mod, pk in _PART.items() if pk == (part, kind))
  param = next(p for (k, p), n in _PARAM.items() if k == kind and n == name)
  return f"stages.{b - 1}.blocks.{u - 1}.{module}.{param}"


def timm_shape(bit_shape: Tuple[int, ...]) -> Tuple[int, ...]:
  """BiT file-layout shape → timm's (HWIO → OIHW; vectors unchanged)."""
  if len(bit_shape) == 4:
    h, w, i, o = bit_shape
    return (o, i, h, w)
  return tuple(bit_shape)


def to_bit_arrays(state: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """``{timm key: array}`` → ``{BiT key: array in BiT's layout}`` (unknown keys dropped).

  OIHW kernels become HWIO; a Linear head ``[K, C]`` becomes the Dense ``[C, K]`` layout.
  """
  out = {}
  for key, value in state.items():
    bit_key = timm_key_to_bit(key)
    if bit_key is None:
      continue
    value = np.asarray(value)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2 and bit_key == bit_npz.HEAD_KERNEL:
      value = value.T
    out[bit_key] = value
  return out


def strip_prefixes(state: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Drops a ``module.`` (DataParallel) or ``model.`` prefix shared by every key."""
  for prefix in ("module.", "model."):
    if state and all(k.startswith(prefix) for k in state):
      state = {k[len(prefix):]: v for k, v in state.items()}
  return dict(state)


def guess_variant(state: Mapping[str, np.ndarray]) -> Optional[str]:
  """Our variant name for a timm BiT state dict (None when no known variant fits)."""
  return bit_npz.guess_variant({k: v.shape for k, v in to_bit_arrays(state).items()})


def check_timm_state(backbone: resnet_v2.ResNetV2, state: Mapping[str, np.ndarray],
                     source: str = "timm weights") -> None:
  """Checks a timm state dict's body keys and shapes (timm layout) against ``backbone``.

  The head (``head.*``) is left to :func:`bit_npz.assign_bit_arrays`'s ``load_head`` rules.
  Raises:
    CheckpointError: one line listing mismatched (timm key, expected vs found shape),
      missing and unexpected keys, and which timm model the file looks like.
  """
  expected = {bit_key_to_timm(k): timm_shape(s)
              for k, s in bit_npz.expected_bit_shapes(backbone).items()
              if not k.startswith(bit_npz.HEAD_PREFIX)}
  found = {k: tuple(np.shape(v)) for k, v in state.items() if not k.startswith("head.")}
  missing, unexpected, mismatched = differences.shape_differences(expected, found)
  if missing or unexpected or mismatched:
    described = differences.describe_differences(missing, unexpected, mismatched, expected,
                                                 found, noun=" key(s)")
    guess = guess_variant(state)
    hint = ""
    if guess and guess != backbone.variant:
      name = timm_model_name(guess)
      hint = f"; {source} looks like " + (f"{name} (variant {guess})" if name != guess else guess)
    raise CheckpointError(f"{source} does not match backbone {backbone.variant} (timm layout): "
                          f"{described}{hint}")


def timm_model_name(variant: str) -> str:
  """timm's model name for one of our published variants (``r50x1`` → ``resnetv2_50x1_bit``)."""
  name = f"resnetv2_{variant[1:]}_bit" if variant.startswith("r") else variant
  return name if name in _TIMM_NAMES else variant


def load_timm_into(backbone: resnet_v2.ResNetV2, state: Mapping[str, np.ndarray],
                   load_head: bit_npz.LoadHead = "auto",
                   source: str = "timm weights") -> bit_npz.LoadReport:
  """Copies a timm BiT state dict into ``backbone`` (all-or-nothing, shape-checked).

  ``load_head`` as in :func:`bit_npz.assign_bit_arrays`.
  """
  bit_npz._ensure_built(backbone)  # pylint: disable=protected-access
  state = strip_prefixes(state)
  check_timm_state(backbone, state, source)
  return bit_npz.assign_bit_arrays(backbone, to_bit_arrays(state), load_head=load_head,
                                   source=source)


def file_kind(path: str) -> Optional[str]:
  """``"safetensors"`` / ``"torch"`` from the extension, else from the first bytes; None if
  neither (or the file does not exist)."""
  lower = path.lower()
  if lower.endswith(SAFETENSORS_SUFFIX):
    return "safetensors"
  if lower.endswith(TORCH_SUFFIXES):
    return "torch"
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    return None
  with tf.io.gfile.GFile(path, "rb") as f:
    head = f.read(16)
  if safetensors_io.looks_like_safetensors(head):
    return "safetensors"
  if head[:2] == b"PK" or head[:1] == b"\x80":  # torch's zip format or a legacy pickle
    return "torch"
  return None


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Reads a timm state dict (``.safetensors`` without torch; ``.pth`` needs torch).

  Raises:
    CheckpointError: missing/unreadable file, or a torch file without PyTorch installed.
  """
  if not tf.io.gfile.exists(path):
    raise CheckpointError(f"weights file not found: {path}")
  kind = file_kind(path)
  if kind == "safetensors":
    return strip_prefixes(safetensors_io.read_safetensors(path)[0])
  if kind == "torch":
    return strip_prefixes(_read_torch(path))
  raise CheckpointError(f"{path}: neither a .safetensors nor a PyTorch (.pth) state dict")


def _read_torch(path: str) -> Dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top  # optional, heavy: only for .pth
  except ImportError:
    raise CheckpointError(
        f"{path}: reading PyTorch .pth files needs torch, which is not installed; use the "
        "model's .safetensors file instead (timm/Hugging Face ship one) or install torch"
    ) from None
  with tf.io.gfile.GFile(path, "rb") as f:
    buf = io.BytesIO(f.read())
  try:
    obj = torch.load(buf, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for bad files
    raise CheckpointError(f"{path}: unreadable PyTorch file ({e})".replace("\n", " ")) from None
  for key in ("state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
  out = {}
  for k, v in obj.items():
    if hasattr(v, "detach"):
      v = v.detach().cpu()
      out[k] = (v.float() if v.is_floating_point() else v).numpy()
  return out
