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
import numpy as np

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


def model_order(reference: str, model: keras.Model) -> Dict[str, int]:
  """``{array path: index in model.weights}`` for the arrays of ``reference``, a weights
  file ``model`` itself just wrote (so each array holds its variable's values).

  HDF5 lists groups by name (``block1_unit01/…`` before the root convolution); this is
  the model's own creation order, for messages that list the first difference first.
  An array is matched to the first unmatched variable of equal shape and values (equal
  twins, e.g. freshly initialised norms, are interchangeable for a shape message).
  """
  values = [np.asarray(v.numpy()) for v in model.weights]
  by_shape: Dict[Tuple[int, ...], List[int]] = {}
  for i, value in enumerate(values):
    by_shape.setdefault(tuple(value.shape), []).append(i)
  taken, rank = set(), {}

  def visit(name, obj):
    if not isinstance(obj, h5py.Dataset):
      return
    array = obj[()]
    for i in by_shape.get(tuple(array.shape), ()):
      if i not in taken and np.array_equal(values[i], array):
        taken.add(i)
        rank[name] = i
        return

  with h5py.File(reference, "r") as f:
    f.visititems(visit)
  return rank


def check_weights_file(model: keras.Model, local_weights: str, source: str,
                       write: Optional[Callable[[str], None]] = None,
                       config_file: str = "config.json") -> None:
  """Compares a ``.weights.h5`` file's arrays with what ``model`` would write.

  ``write(path)`` writes the reference file (default ``model.save_weights``).
  Raises:
    CheckpointError: one line naming ``source`` and each differing array (path inside the
      file, expected vs found shape), missing and unexpected arrays, each kind in the
      model's order (:func:`model_order`; the first one usually explains the rest).
  """
  found = h5_shapes(local_weights)
  with tempfile.TemporaryDirectory() as tmp:
    reference = os.path.join(tmp, "reference" + WEIGHTS_SUFFIX)
    (write or model.save_weights)(reference)
    expected = h5_shapes(reference)
    missing, unexpected, mismatched = differences.shape_differences(expected, found)
    if not (missing or unexpected or mismatched):
      return
    rank = model_order(reference, model)
  key = lambda k: (rank.get(k, len(rank)), k)  # noqa: E731
  missing, mismatched = sorted(missing, key=key), sorted(mismatched, key=key)
  described = differences.describe_differences(missing, unexpected, mismatched, expected,
                                               found, noun=" array(s)")
  variant = getattr(getattr(model, "backbone", model), "variant", "?")
  raise CheckpointError(f"{source} does not match the {type(model).__name__} ({variant}) its "
                        f"{config_file} describes: {described}")
