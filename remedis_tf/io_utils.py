"""File helpers over ``tf.io.gfile`` (so ``gs://`` works) with atomic writes.

Atomic writes go to a temporary sibling first and are renamed into place, so a crash
mid-write never leaves a half-written result file behind.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Callable

import tensorflow as tf


def ensure_dir(path: str) -> str:
  """Creates ``path`` (and parents) if missing; returns it."""
  tf.io.gfile.makedirs(path)
  return path


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` via a temporary file + rename (overwrites on success)."""
  parent = os.path.dirname(path)
  if parent:
    ensure_dir(parent)
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
  """UTF-8 text version of :func:`atomic_write_bytes`."""
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically."""
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str) -> Any:
  """Reads a JSON file through gfile."""
  with tf.io.gfile.GFile(path, "r") as f:
    return json.load(f)


def replace_dir_atomically(out_dir: str, write: Callable[[str], None]) -> str:
  """Writes a directory via ``write(tmp_dir)`` into a temporary sibling, then swaps it in.

  An existing ``out_dir`` is replaced only after ``write`` succeeded, so a failed export
  leaves the previous one intact. Returns ``out_dir``.
  """
  tag = uuid.uuid4().hex[:8]
  tmp, old = f"{out_dir}.tmp-{tag}", f"{out_dir}.old-{tag}"
  try:
    write(tmp)
    if tf.io.gfile.exists(out_dir):
      tf.io.gfile.rename(out_dir, old)
    tf.io.gfile.rename(tmp, out_dir)
    if tf.io.gfile.exists(old):
      tf.io.gfile.rmtree(old)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.rmtree(tmp)
  return out_dir
