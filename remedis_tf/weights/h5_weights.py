"""Keras ``.weights.h5`` files checked against a model before loading.

Keras' own ``load_weights`` leaves a layer the file lacks at its random initialisation;
:func:`check_weights_file` compares every array (path inside the HDF5 file and shape) with
what the model itself would write, so a preset that does not fit its config is refused
with each differing array named. Used by both preset formats
(:mod:`remedis_tf.weights.preset`, :mod:`remedis_tf.weights.keras_hub_presets`).
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

import h5py
import keras

from remedis_tf.errors import CheckpointError
from remedis_tf.weights import differences

WEIGHTS_SUFFIX = ".weights.h5"


def h5_arrays(path: str) -> List[Tuple[str, Tuple[int, ...], str]]:
  """``(dataset path, shape, dtype)`` of every array in a local HDF5 weights file."""
  out: List[Tuple[str, Tuple[int, ...], str]] = []

  def visit(name, obj):
    if isinstance(obj, h5py.Dataset):
      out.append((name, tuple(obj.shape), obj.dtype.name))

  try:
    with h5py.File(path, "r") as f:
      f.visititems(visit)
  except OSError as e:
    raise CheckpointError(f"{path}: not a readable HDF5 weights file ({e})") from None
  return out


def h5_shapes(path: str) -> Dict[str, Tuple[int, ...]]:
  """``{dataset path: shape}`` of every array in a local HDF5 weights file."""
  return {name: shape for name, shape, _ in h5_arrays(path)}


def check_weights_file(model: keras.Model, local_weights: str, source: str,
                       write: Optional[Callable[[str], None]] = None,
                       config_file: str = "config.json") -> None:
  """Compares a ``.weights.h5`` file's arrays with what ``model`` would write.

  ``write(path)`` writes the reference file (default ``model.save_weights``).
  Raises:
    CheckpointError: one line naming ``source`` and each differing array (path inside the
      file, expected vs found shape), missing and unexpected arrays.
  """
  found = h5_shapes(local_weights)
  with tempfile.TemporaryDirectory() as tmp:
    reference = os.path.join(tmp, "reference" + WEIGHTS_SUFFIX)
    (write or model.save_weights)(reference)
    expected = h5_shapes(reference)
  missing, unexpected, mismatched = differences.shape_differences(expected, found)
  if missing or unexpected or mismatched:
    described = differences.describe_differences(missing, unexpected, mismatched, expected,
                                                 found, noun=" array(s)")
    variant = getattr(getattr(model, "backbone", model), "variant", "?")
    raise CheckpointError(f"{source} does not match the {type(model).__name__} ({variant}) its "
                          f"{config_file} describes: {described}")
