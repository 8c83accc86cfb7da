"""Embedding arrays on disk (what :func:`remedis_tf.runs.embed.export_embeddings` writes).

* ``out_path`` ending in ``.npz``: one file with arrays ``ids [N]``, ``patients [N]``,
  ``embeddings`` float32 ``[N, C]``, ``labels`` / ``mask`` float32 ``[N, K]``,
  ``label_names [K]``, ``model [1]``;
* any other ``out_path``: a directory with one ``<name>.npy`` per array plus
  ``embeddings.json`` describing them.

No pickle anywhere (strings are fixed-width unicode arrays); read back with
:func:`read_embeddings` or ``np.load(path, allow_pickle=False)``.
"""

from __future__ import annotations

import io
import os
from typing import Dict

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.errors import ConfigError

ARRAYS = ("ids", "patients", "embeddings", "labels", "mask", "label_names", "model")


def _npy_bytes(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, array, allow_pickle=False)
  return buf.getvalue()


def write_arrays(arrays: Dict[str, np.ndarray], out_path: str) -> None:
  """Writes arrays as one ``.npz`` (path ends with ``.npz``) or ``.npy`` files in a folder,
  each file atomically; object arrays are refused (they would need pickle)."""
  for name, array in arrays.items():
    if array.dtype == object:
      raise ConfigError(f"array {name!r} has dtype object; it would need pickle")
  if out_path.endswith(".npz"):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    io_utils.atomic_write_bytes(out_path, buf.getvalue())
    return
  if tf.io.gfile.exists(out_path) and not tf.io.gfile.isdir(out_path):
    raise ConfigError(f"embedding output {out_path} exists and is not a directory; use a "
                      "directory or a .npz path")
  for name, array in arrays.items():
    io_utils.atomic_write_bytes(os.path.join(out_path, f"{name}.npy"), _npy_bytes(array))
  io_utils.atomic_write_json(os.path.join(out_path, "embeddings.json"), {
      "format": "remedis_tf.embeddings", "version": 1,
      "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
  })


def read_embeddings(path: str) -> Dict[str, np.ndarray]:
  """Reads what :func:`remedis_tf.runs.embed.export_embeddings` wrote (``.npz`` or a
  ``.npy`` directory)."""
  if path.endswith(".npz"):
    with tf.io.gfile.GFile(path, "rb") as f:
      data = np.load(io.BytesIO(f.read()), allow_pickle=False)
      return {k: data[k] for k in data.files}
  out = {}
  for name in ARRAYS:
    file = os.path.join(path, f"{name}.npy")
    if tf.io.gfile.exists(file):
      with tf.io.gfile.GFile(file, "rb") as f:
        out[name] = np.load(io.BytesIO(f.read()), allow_pickle=False)
  return out
