"""Writing a Manifest (or in-memory examples) as sharded TFRecords with their sidecars.

Shards are written under temporary names and renamed on success; the index CSV and then
the sidecar are written last, so a sidecar marks a complete write (package docstring).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import math
import time
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.data import decode
from remedis_tf.data import dicom as dicom_lib
from remedis_tf.data.manifest import Manifest, Record, TASK_TYPES
from remedis_tf.data.tfrecords.schema import (SHARD_RE, index_path, make_example, shard_path,
                                              sidecar_path)
from remedis_tf.data.validate import BadFile, BadReport
from remedis_tf.errors import ConfigError, DataError


def encode_png(image: np.ndarray, bit_depth: int = 8) -> bytes:
  """float ``[H, W, 3]`` in [0, 1] → PNG bytes (1 channel if all channels are equal)."""
  if bit_depth not in (8, 16):
    raise ConfigError(f"bit_depth must be 8 or 16, got {bit_depth}")
  image = np.asarray(image, np.float32)
  if image.shape[-1] == 3 and np.array_equal(image[..., 0], image[..., 1]) and \
      np.array_equal(image[..., 0], image[..., 2]):
    image = image[..., :1]
  top = 255.0 if bit_depth == 8 else 65535.0
  dtype = np.uint8 if bit_depth == 8 else np.uint16
  quantised = np.round(np.clip(image, 0.0, 1.0) * top).astype(dtype)
  return tf.io.encode_png(quantised).numpy()


def _default_shards(count: int) -> int:
  return max(1, math.ceil(count / 1000))


class _ShardWriter:
  """Writes shards to temporary names; ``commit`` renames them and writes the sidecars."""

  def __init__(self, prefix: str, num_shards: int):
    parent = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
    if parent:
      io_utils.ensure_dir(parent)
    self.prefix, self.num_shards = prefix, num_shards
    self.final = [shard_path(prefix, i, num_shards) for i in range(num_shards)]
    tag = uuid.uuid4().hex[:8]
    self.tmp = [f"{p}.tmp-{tag}" for p in self.final]
    self.writers = [tf.io.TFRecordWriter(p) for p in self.tmp]
    self.count = 0
    self.index_rows: List[List[str]] = []

  def write(self, record: Record, serialized: bytes) -> None:
    shard = self.count % self.num_shards
    self.writers[shard].write(serialized)
    self.index_rows.append([record.example_id, record.patient_id, record.view, record.site,
                            str(record.source_row), self.final[shard].rsplit("/", 1)[-1],
                            *[repr(float(v)) for v in record.labels],
                            *[repr(float(v)) for v in record.mask]])
    self.count += 1

  def abort(self) -> None:
    for w in self.writers:
      w.close()
    for p in self.tmp:
      if tf.io.gfile.exists(p):
        tf.io.gfile.remove(p)

  def commit(self, label_names: Sequence[str], task: str, meta: Dict) -> Dict:
    for w in self.writers:
      w.close()
    for tmp, final in zip(self.tmp, self.final):
      tf.io.gfile.rename(tmp, final, overwrite=True)
    # Shards of an earlier write with another shard count would be picked up by a glob.
    keep = set(self.final)
    for old in tf.io.gfile.glob(f"{self.prefix}-*-of-*.tfrecord"):
      if old not in keep and SHARD_RE.search(old):
        tf.io.gfile.remove(old)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "patient", "view", "site", "source_row", "shard",
                *[f"label:{n}" for n in label_names], *[f"mask:{n}" for n in label_names]])
    w.writerows(self.index_rows)
    io_utils.atomic_write_text(index_path(self.prefix), buf.getvalue())
    sidecar = {"label_names": list(label_names), "task": task, "count": self.count,
               "num_shards": self.num_shards,
               "files": [p.rsplit("/", 1)[-1] for p in self.final], **meta}
    io_utils.atomic_write_json(sidecar_path(self.prefix), sidecar)
    return sidecar


def _prepare(record: Record, image_size: Optional[int], bit_depth: int,
             dicom_options: Optional[dicom_lib.DicomOptions]) -> bytes:
  image = decode.read_image_numpy(record.image_path, max_size=image_size,
                                  dicom_options=dicom_options)
  return make_example(record, encode_png(image, bit_depth))


def write_tfrecords(manifest: Manifest, out_prefix: str, num_shards: Optional[int] = None,
                    image_size: Optional[int] = None, num_workers: int = 4,
                    progress_callback: Optional[Callable[[int, int], None]] = None,
                    skip_bad: bool = False, bit_depth: int = 8,
                    dicom_options: Optional[dicom_lib.DicomOptions] = None,
                    max_bad_examples: int = 10) -> Dict:
  """Decodes, optionally downscales, and writes every record as sharded TFRecords.

  Args:
    manifest: the records (any reader).
    out_prefix: output path prefix (local or gs://); see the module docstring for names.
    num_shards: shard count; None → one shard per 1000 images.
    image_size: longest side after downscaling (aspect kept, no upscaling); None = as is.
    num_workers: decode/encode threads.
    progress_callback: ``fn(done, total)`` after every record (called in this thread).
    skip_bad: drop unreadable images (listed in the summary) instead of raising.
    bit_depth: 8 or 16-bit PNG inside the records (16 keeps 12/16-bit sources exact).
    dicom_options: DICOM grey mapping (default: ``manifest.dicom``).
    max_bad_examples: bad files listed in the summary.

  Returns:
    JSON-able summary: ``count`` (written), ``skipped``, ``total``, ``num_shards``,
    ``files``, ``seconds``, ``bad_examples`` (path, row, reason) and ``skipped_summary``
    (text to print, "" when nothing was skipped).

  Raises:
    DataError: (skip_bad=False) the first unreadable image, naming file and CSV row;
      or no image could be written.
  """
  if not len(manifest):
    raise DataError(f"{manifest.source or 'manifest'}: nothing to write (0 records)")
  if image_size is not None and image_size < 1:
    raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
  if bit_depth not in (8, 16):
    raise ConfigError(f"bit_depth must be 8 or 16, got {bit_depth}")
  num_shards = num_shards or _default_shards(len(manifest))
  dicom_options = dicom_options or manifest.dicom
  if num_shards < 1:
    raise ConfigError(f"num_shards must be >= 1, got {num_shards}")
  start = time.time()
  total = len(manifest)
  writer = _ShardWriter(out_prefix, num_shards)
  bad: List[BadFile] = []
  n_bad = 0
  try:
    with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
      window = max(1, num_workers) * 4  # bounded read-ahead: memory stays flat
      records = manifest.records
      for lo in range(0, total, window):
        chunk = records[lo:lo + window]
        futures = [pool.submit(_prepare, r, image_size, bit_depth, dicom_options)
                   for r in chunk]
        for j, (rec, fut) in enumerate(zip(chunk, futures)):
          try:
            writer.write(rec, fut.result())
          except DataError as e:
            msg = str(e)
            reason = msg[len(rec.image_path) + 2:] if msg.startswith(rec.image_path + ": ") \
                else msg
            if not skip_bad:
              for f in futures[j + 1:]:
                f.cancel()
              row = f"row {rec.source_row} of {manifest.source}" if rec.source_row else \
                  f"record {lo + j} of {manifest.source or 'manifest'}"
              raise DataError(f"{rec.image_path} ({row}): {reason} (skip such files with "
                              "skip_bad / --skip_bad_examples)") from e
            n_bad += 1
            if len(bad) < max_bad_examples:
              bad.append(BadFile(rec.image_path, rec.source_row, reason))
          if progress_callback is not None:
            progress_callback(lo + j + 1, total)
    if writer.count == 0:
      raise DataError(f"{manifest.source or 'manifest'}: all {total} images are unreadable, "
                      f"e.g. {bad[0].path}: {bad[0].reason}")
    report = BadReport(total=total, count=n_bad, examples=tuple(bad), source=manifest.source)
    sidecar = writer.commit(manifest.label_names, manifest.task, {
        "image_size": image_size, "bit_depth": bit_depth, "source": manifest.source,
        "skipped": n_bad})
  except BaseException:
    writer.abort()
    raise
  return {"count": writer.count, "skipped": n_bad, "total": total,
          "num_shards": num_shards, "files": writer.final, "sidecar": sidecar_path(out_prefix),
          "index": index_path(out_prefix), "seconds": time.time() - start,
          "bad_examples": [dataclasses.astuple(b) for b in bad],
          "skipped_summary": report.summary(), "label_names": sidecar["label_names"],
          "task": sidecar["task"]}


def write_tfrecords_from_examples(
    examples: Iterable[Tuple[Record, np.ndarray]], out_prefix: str, *,
    label_names: Sequence[str], task: str, num_shards: int = 1,
    image_size: Optional[int] = None, bit_depth: int = 8, source: str = "",
    progress_callback: Optional[Callable[[int, int], None]] = None,
    total: int = 0) -> Dict:
  """Writes in-memory ``(record, float [H, W, 3] image in [0, 1])`` pairs (e.g. from TFDS).

  ``record.image_path`` is ignored; ``image_size`` downscales as in
  :func:`write_tfrecords`. Returns the same kind of summary.
  """
  if task not in TASK_TYPES:
    raise ConfigError(f"task must be one of {TASK_TYPES}, got {task!r}")
  start = time.time()
  writer = _ShardWriter(out_prefix, num_shards)
  try:
    for i, (rec, image) in enumerate(examples):
      if image_size is not None:
        image = _resize_numpy(image, image_size)
      writer.write(rec, make_example(rec, encode_png(image, bit_depth)))
      if progress_callback is not None:
        progress_callback(i + 1, total)
    if writer.count == 0:
      raise DataError(f"{source or 'dataset'}: no examples to write")
    writer.commit(label_names, task, {"image_size": image_size, "bit_depth": bit_depth,
                                      "source": source, "skipped": 0})
  except BaseException:
    writer.abort()
    raise
  return {"count": writer.count, "skipped": 0, "total": writer.count,
          "num_shards": num_shards, "files": writer.final, "sidecar": sidecar_path(out_prefix),
          "index": index_path(out_prefix), "seconds": time.time() - start,
          "bad_examples": [], "skipped_summary": "", "label_names": list(label_names),
          "task": task}


def _resize_numpy(image: np.ndarray, max_size: int) -> np.ndarray:
  h, w = image.shape[:2]
  if max(h, w) <= max_size:
    return image
  scale = max_size / max(h, w)
  size = (max(1, round(h * scale)), max(1, round(w * scale)))
  return tf.image.resize(image, size, method="area").numpy()
