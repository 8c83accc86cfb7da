"""BiT ``.npz`` interop: read, load into :class:`ResNetV2`, write back.

BiT's released weights (``BiT-M-R50x1.npz`` etc.) are flat ``{key: array}`` files whose keys
are listed in docs/numerics.md. Conv kernels are HWIO, GroupNorm gamma/beta ``[C]``, and the head
kernel is a 1x1 conv ``[1, 1, C, K]`` (our Dense head holds ``[C, K]``; reshaped here).

The matching logic (:func:`assign_bit_arrays`) is shared with the SavedModel importer: any
source that can be turned into ``{BiT key: array}`` loads through it, with the same checks.
"""

from __future__ import annotations

import dataclasses
import io
import re
import zipfile
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.errors import CheckpointError
from remedis_tf.models import resnet_v2
from remedis_tf.weights import differences

HEAD_PREFIX = "resnet/head/"
HEAD_KERNEL = "resnet/head/conv2d/kernel"
HEAD_BIAS = "resnet/head/conv2d/bias"
ROOT_KERNEL = "resnet/root_block/standardized_conv2d/kernel"
_UNIT_RE = re.compile(r"^resnet/block(\d+)/unit(\d+)/")

LoadHead = Union[str, bool]


@dataclasses.dataclass(frozen=True)
class LoadReport:
  """What a load did.

  Attributes:
    source: the file/directory the weights came from.
    variant: the backbone variant loaded into.
    num_loaded: number of arrays assigned.
    head: ``"loaded"``, ``"absent"`` (source has no head) or ``"skipped: <reason>"``.
    ignored: source keys that were not used (e.g. a head that was skipped).
  """
  source: str
  variant: str
  num_loaded: int
  head: str
  ignored: Tuple[str, ...] = ()

  def __str__(self) -> str:
    """One readable line, e.g. ``42 arrays into tiny, head skipped: ..., 2 keys ignored``."""
    ignored = f", {len(self.ignored)} source keys ignored" if self.ignored else ""
    return f"{self.num_loaded} arrays into {self.variant}, head {self.head}{ignored}"


def read_npz(path: str) -> Dict[str, np.ndarray]:
  """Reads a ``.npz`` file (local or ``gs://``) into ``{key: array}`` without pickle.

  Raises:
    CheckpointError: the file is missing, not a zip/npz, or holds object (pickled) arrays.
  """
  if not tf.io.gfile.exists(path):
    raise CheckpointError(f"weights file not found: {path}")
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      return {key: npz[key] for key in npz.files}
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise CheckpointError(f"{path}: not a readable .npz weights file ({e})".replace("\n", " "))


def to_bit_layout(key: str, array: np.ndarray) -> np.ndarray:
  """Converts one of our arrays to BiT's file layout (head kernel ``[C,K]`` → ``[1,1,C,K]``)."""
  if key == HEAD_KERNEL and array.ndim == 2:
    return array.reshape((1, 1) + array.shape)
  return array


def from_bit_layout(key: str, array: np.ndarray) -> np.ndarray:
  """Inverse of :func:`to_bit_layout` (head kernel ``[1,1,C,K]`` → ``[C,K]``)."""
  if key == HEAD_KERNEL and array.ndim == 4:
    if array.shape[:2] != (1, 1):
      raise CheckpointError(
          f"{key}: expected a 1x1 head kernel, found shape {tuple(array.shape)}")
    return array.reshape(array.shape[2:])
  return array


def expected_bit_shapes(backbone: resnet_v2.ResNetV2) -> Dict[str, Tuple[int, ...]]:
  """``{BiT key: shape in BiT's file layout}`` of a (built) backbone."""
  _ensure_built(backbone)
  return {k: tuple(to_bit_layout(k, np.empty(tuple(v.shape), np.uint8)).shape)
          for k, v in backbone.bit_variable_map().items()}


def guess_variant(shapes: Mapping[str, Sequence[int]]) -> Optional[str]:
  """Names the known variant whose BiT keys/shapes (head excluded) match ``shapes``.

  Uses the root filters and the number of units per block; returns None if no variant in
  :data:`resnet_v2.VARIANTS` fits.
  """
  root = shapes.get(ROOT_KERNEL)
  if root is None or len(root) != 4:
    return None
  units = {}
  for key in shapes:
    m = _UNIT_RE.match(key)
    if m:
      b, u = int(m.group(1)), int(m.group(2))
      units[b] = max(units.get(b, 0), u)
  if sorted(units) != [1, 2, 3, 4]:
    return None
  found = tuple(units[b] for b in (1, 2, 3, 4))
  for name, spec in resnet_v2.VARIANTS.items():
    if spec.units == found and spec.root_filters == int(root[-1]):
      return name
  return None


def assign_bit_arrays(backbone: resnet_v2.ResNetV2, arrays: Mapping[str, np.ndarray],
                      load_head: LoadHead = "auto", source: str = "weights") -> LoadReport:
  """Copies ``{BiT key: array}`` (BiT file layout) into ``backbone``, all-or-nothing.

  Args:
    backbone: a ResNetV2 (built automatically if needed).
    arrays: BiT keys → arrays; head kernel may be ``[1,1,C,K]`` or ``[C,K]``.
    load_head: True (the head must be present and match), False (ignore any head) or
      "auto" (load it iff both sides have a head of the same shape).
    source: names the input in messages.
  Raises:
    CheckpointError: one line listing missing/unexpected keys and shape mismatches
      (key, expected vs found shape) and, when recognisable, which variant the source is.
  """
  if load_head not in ("auto", True, False):
    raise ValueError(f"load_head must be 'auto', True or False, got {load_head!r}")
  _ensure_built(backbone)
  variables = backbone.bit_variable_map()
  expected = expected_bit_shapes(backbone)
  found = {k: tuple(np.shape(a)) for k, a in arrays.items()}
  if HEAD_KERNEL in found and len(found[HEAD_KERNEL]) == 2:  # Dense-layout head kernel
    found[HEAD_KERNEL] = (1, 1) + found[HEAD_KERNEL]

  body_expected = {k for k in expected if not k.startswith(HEAD_PREFIX)}
  body_found = {k for k in found if not k.startswith(HEAD_PREFIX)}
  missing = [k for k in expected if k in body_expected - body_found]
  unexpected = sorted(body_found - body_expected)
  # Model order (root first) reads better than alphabetical in messages.
  mismatched = [k for k in expected if k in body_found and expected[k] != found[k]]

  head_expected = {k for k in expected if k.startswith(HEAD_PREFIX)}
  head_found = {k for k in found if k.startswith(HEAD_PREFIX)}
  ignored: List[str] = []
  head_status = "absent" if not head_found else "loaded"
  use_head = False
  if load_head is True:
    if not head_expected:
      raise CheckpointError(f"{source}: head requested but backbone {backbone.variant} was "
                            "built without a head (num_classes=0)")
    missing += sorted(head_expected - head_found)
    unexpected += sorted(head_found - head_expected)
    mismatched += [k for k in sorted(head_expected & head_found) if expected[k] != found[k]]
    use_head = True
  elif head_found:
    reason = None
    if load_head is False:
      reason = "load_head=False"
    elif not head_expected:
      reason = "backbone has no head"
    elif head_found != head_expected or any(expected[k] != found[k] for k in head_found):
      shapes = ", ".join(f"{k} expected {expected.get(k)} found {found[k]}"
                         for k in sorted(head_found))
      reason = f"head differs ({shapes})"
    if reason:
      head_status = f"skipped: {reason}"
      ignored = sorted(head_found)
    else:
      use_head = True

  if missing or unexpected or mismatched:
    raise CheckpointError(_mismatch_message(source, backbone.variant, missing, unexpected,
                                            mismatched, expected, found))
  keys = sorted(body_expected) + (sorted(head_expected) if use_head else [])
  for k in keys:
    var = variables[k]
    value = from_bit_layout(k, np.asarray(arrays[k]))
    if not np.issubdtype(value.dtype, np.floating):
      raise CheckpointError(f"{source}: {k} has non-float dtype {value.dtype}")
    var.assign(value.astype(var.dtype))
  return LoadReport(source=source, variant=backbone.variant, num_loaded=len(keys),
                    head=head_status, ignored=tuple(ignored))


def load_bit_npz(backbone: resnet_v2.ResNetV2, path: str,
                 load_head: LoadHead = "auto") -> LoadReport:
  """Loads a BiT ``.npz`` into ``backbone`` (see :func:`assign_bit_arrays` for checks)."""
  return assign_bit_arrays(backbone, read_npz(path), load_head=load_head, source=path)


def backbone_bit_arrays(backbone: resnet_v2.ResNetV2,
                        include_head: bool = True) -> Dict[str, np.ndarray]:
  """``{BiT key: float32 array in BiT's layout}`` of a built backbone."""
  _ensure_built(backbone)
  out = {}
  for k, v in backbone.bit_variable_map().items():
    if k.startswith(HEAD_PREFIX) and not include_head:
      continue
    out[k] = to_bit_layout(k, np.asarray(v.numpy(), dtype=np.float32))
  return out


def save_bit_npz(backbone: resnet_v2.ResNetV2, path: str, include_head: bool = True) -> str:
  """Writes ``backbone`` as a BiT ``.npz`` (exact BiT keys/layouts) atomically; returns path."""
  buf = io.BytesIO()
  np.savez(buf, **backbone_bit_arrays(backbone, include_head))
  io_utils.atomic_write_bytes(path, buf.getvalue())
  return path


def _ensure_built(backbone) -> None:
  if not isinstance(backbone, resnet_v2.ResNetV2):
    raise CheckpointError(
        f"BiT weights load only into a native ResNetV2, not {type(backbone).__name__}")
  if not backbone.built:
    backbone.build_for(32)


def _mismatch_message(source, variant, missing, unexpected, mismatched, expected, found) -> str:
  described = differences.describe_differences(missing, unexpected, mismatched, expected,
                                               found, noun=" key(s)")
  guess = guess_variant(found)
  hint = f"; {source} looks like {guess}" if guess and guess != variant else ""
  return f"{source} does not match backbone {variant}: {described}{hint}"
