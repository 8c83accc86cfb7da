"""Checks before a training run starts, and what a run that fails early leaves behind.

* :func:`check_batch` — the global batch must split over the replicas and fit the data,
  checked before anything is written.
* :func:`guarded_run` — wraps a run: an image that fails to decode inside ``tf.data``
  becomes a one-line DataError (instead of a TF graph traceback), and a *fresh* run
  directory created by this run is removed again when the run fails with a user error
  before its first checkpoint (bad ``init``, bad data), so a failed command leaves no
  half-made run directory behind that a later run would mistake for its own.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Optional

import tensorflow as tf

from remedis_tf.errors import (ConfigError, DataError, RemedisError, RunDirLockedError,
                               TrainingError)

CHECKPOINT_SUBDIR = "checkpoints"  # as in remedis_tf.train.checkpoints

# Messages of TF's image decode kernels and of our own unknown-format assertion.
_DECODE_ERROR = re.compile(
    r"Invalid PNG data|Invalid JPEG data|jpeg::|Decode(Png|Jpeg|Image|Bmp|Gif)\b|"
    r"not a PNG, JPEG or DICOM|DICOM")
_DECODE_DETAIL = re.compile(r"Invalid PNG data|Invalid JPEG data|jpeg::|not a PNG, JPEG or "
                            r"DICOM|DICOM|Decode\w*")


def check_batch(global_batch_size: int, replicas: int, num_items: int, source: str,
                what: str = "images") -> None:
  """Raises before training when the global batch cannot be formed.

  ConfigError: ``global_batch_size`` (flag ``--batch_size``) is < 1 or not divisible by
  ``replicas``. DataError: fewer than ``global_batch_size`` ``what`` (images, or cases
  for MICLe) in ``source`` — training drops partial batches, so no step could run.
  """
  if global_batch_size < 1:
    raise ConfigError(f"--batch_size must be >= 1, got {global_batch_size}")
  if replicas > 1 and global_batch_size % replicas:
    raise ConfigError(f"--batch_size {global_batch_size} is not divisible by the {replicas} "
                      f"replicas; use a multiple of {replicas}")
  if num_items < global_batch_size:
    raise DataError(f"dataset {source or '<unnamed>'} has {num_items} {what}, fewer than one "
                    f"global batch (--batch_size {global_batch_size}); lower --batch_size "
                    "or add data")


def is_decode_error(error: BaseException) -> bool:
  """True for a TF op error raised by decoding an image inside an input pipeline."""
  return (isinstance(error, tf.errors.InvalidArgumentError)
          and bool(_DECODE_ERROR.search(error.message or "")))


def _decode_detail(error: BaseException) -> str:
  """The decoder's own words from a TF error message (e.g. "Invalid PNG data, size 1586")."""
  text = re.sub(r"\{\{[^}]*\}\}", "", getattr(error, "message", "") or str(error))
  for line in text.splitlines():
    line = re.sub(r"\s*\[Op:[^\]]*\].*$", "", line).strip()
    if not line or line.startswith(("Detected at node", "File ", "Graph execution error")):
      continue
    found = _DECODE_DETAIL.search(line)
    if found:
      return line[found.start():]
  return type(error).__name__


def _has_checkpoint(run_dir: str) -> bool:
  directory = os.path.join(run_dir, CHECKPOINT_SUBDIR)
  return tf.io.gfile.isdir(directory) and bool(tf.io.gfile.glob(
      os.path.join(directory, "*.index")))


@contextlib.contextmanager
def guarded_run(run_dir: str, source: str = "", data_hint: str = "") -> Iterator[None]:
  """Context for one training run in ``run_dir`` (see module docstring).

  Args:
    run_dir: the run directory; removed on a user error only if it did not exist before
      and holds no checkpoint (TrainingError, e.g. a non-finite loss, keeps it: its
      summaries explain what happened; RunDirLockedError keeps it: it belongs to the
      process that holds the lock, which may have created it a moment ago).
    source: the training data's name, for decode errors.
    data_hint: how to find/skip the bad file (e.g. the binary's flag names).
  """
  existed = tf.io.gfile.exists(run_dir)
  try:
    yield
  except tf.errors.InvalidArgumentError as e:
    if not is_decode_error(e):
      raise
    hint = data_hint or ("run remedis_tf.data.validate.validate_manifest(check='decode') to "
                         "find it, or skip bad files with skip_bad=True")
    _remove_if_fresh(run_dir, existed)
    raise DataError(f"an image of {source or 'the training data'} failed to decode during "
                    f"training ({_decode_detail(e)}); {hint}") from None
  except RemedisError as e:
    if not isinstance(e, (TrainingError, RunDirLockedError)):
      _remove_if_fresh(run_dir, existed)
    raise


def _remove_if_fresh(run_dir: Optional[str], existed: bool) -> None:
  if existed or not run_dir or not tf.io.gfile.exists(run_dir) or _has_checkpoint(run_dir):
    return
  try:
    tf.io.gfile.rmtree(run_dir)
  except tf.errors.OpError:
    pass  # best effort: the original error matters more
