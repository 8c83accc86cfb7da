"""A small, dependency-free reader for ``.safetensors`` files (numpy only, no torch).

Layout (Hugging Face safetensors): 8 bytes little-endian unsigned header length ``N``, then
``N`` bytes of UTF-8 JSON ``{name: {"dtype": "F32", "shape": [...], "data_offsets":
[begin, end]}, "__metadata__": {str: str}}``, then the raw little-endian, row-major tensor
bytes; offsets are relative to the first byte after the header.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf.errors import CheckpointError

METADATA_KEY = "__metadata__"
# safetensors dtype name -> numpy dtype (little-endian). BF16 is decoded separately.
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "U64": np.dtype("<u8"), "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"),
}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation refuses larger headers


def looks_like_safetensors(head: bytes) -> bool:
  """True when the first bytes of a file (at least 9) start a safetensors header."""
  if len(head) < 9:
    return False
  (n,) = struct.unpack("<Q", head[:8])
  return 2 <= n <= _MAX_HEADER and head[8:9] == b"{"


def parse_safetensors(data: bytes, source: str = "safetensors"
                      ) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
  """Decodes a whole safetensors file held in memory.

  Returns ``({name: array}, metadata)``; arrays keep their dtype except BF16, which is
  widened exactly to float32 (numpy has no bfloat16).
  Raises:
    CheckpointError: one line naming ``source`` and what is wrong (truncated file, bad
      JSON, unknown dtype, offsets outside the data or not matching the shape).
  """
  if len(data) < 8:
    raise CheckpointError(f"{source}: not a safetensors file (only {len(data)} bytes)")
  (n,) = struct.unpack("<Q", data[:8])
  if n > _MAX_HEADER or 8 + n > len(data):
    raise CheckpointError(f"{source}: not a safetensors file (header length {n} does not fit "
                          f"in {len(data)} bytes)")
  try:
    header = json.loads(data[8:8 + n].decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise CheckpointError(f"{source}: unreadable safetensors header ({e})") from None
  if not isinstance(header, dict):
    raise CheckpointError(f"{source}: safetensors header is not a JSON object")
  metadata = header.pop(METADATA_KEY, None) or {}
  buffer = memoryview(data)[8 + n:]
  out = {}
  for name, info in header.items():
    try:
      dtype_name, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError):
      raise CheckpointError(f"{source}: tensor {name} has no dtype/shape/data_offsets") from None
    if dtype_name not in DTYPES:
      raise CheckpointError(f"{source}: tensor {name} has unsupported dtype {dtype_name} "
                            f"(supported: {', '.join(sorted(DTYPES))})")
    dtype = DTYPES[dtype_name]
    count = int(np.prod(shape, dtype=np.int64))
    if not 0 <= begin <= end <= len(buffer) or end - begin != count * dtype.itemsize:
      raise CheckpointError(f"{source}: tensor {name} ({dtype_name} {list(shape)}) has data "
                            f"offsets [{begin}, {end}] that do not fit its shape or the "
                            f"{len(buffer)}-byte data section")
    array = np.frombuffer(buffer[begin:end], dtype=dtype, count=count).reshape(shape)
    if dtype_name == "BF16":  # bfloat16 is the top half of a float32
      array = (array.astype(np.uint32) << 16).view(np.float32)
    out[name] = array
  return out, {str(k): str(v) for k, v in metadata.items()}


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
  """Reads a ``.safetensors`` file (local or ``gs://``); see :func:`parse_safetensors`."""
  if not tf.io.gfile.exists(path):
    raise CheckpointError(f"weights file not found: {path}")
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  return parse_safetensors(data, source=path)
