"""Random access to the images of a TFRecord index manifest, by record index.

The training pipelines visit records in a position-determined random order, so they need
"record i → encoded image" rather than a sequential stream of shards. A TFRecord file is a
sequence of frames ``[uint64 length][uint32 crc][data][uint32 crc]``; scanning the 12-byte
headers (seeking over the data) gives every record's byte range without reading images.
Record k of shard s is matched to the manifest through the index CSV (which lists records
in written order with their shard), and every read checks the Example's ``image/id``.

Two ways to serve the bytes, chosen by their total size:

* **in memory** (total <= ``memory_bytes``): the serialized Examples of the manifest's
  records are read once (whole shards, sequentially) into one string tensor; lookups are a
  ``tf.gather``. Pure graph ops, fastest; costs RAM equal to the encoded subset (a
  label-fraction subset only loads its own records).
* **ranged reads** (larger): each lookup reads exactly its record's byte range from the
  shard (``tf.io.gfile`` seek + read inside ``tf.numpy_function``). Constant memory, works
  on ``gs://``, but each read holds the Python GIL briefly and costs one storage request,
  and the dataset cannot be serialized (e.g. to tf.data service).

Either way a record's bytes are only DECODED when its position is reached, so
``start_step`` skipping stays free.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict, List, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf.data import tfrecords as tfrecords_lib
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError

DEFAULT_MEMORY_BYTES = 1 << 30
_HEADER = 12  # uint64 length + uint32 masked CRC
_FOOTER = 4


def scan_shard(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Byte ``(offsets, lengths)`` int64 ``[R]`` of the R records' data in one shard.

  Reads only the frame headers. DataError naming the file when it is missing or truncated.
  """
  offsets, lengths = [], []
  try:
    size = tf.io.gfile.stat(path).length
    with tf.io.gfile.GFile(path, "rb") as f:
      pos = 0
      while pos < size:
        f.seek(pos)
        header = f.read(_HEADER)
        if len(header) < _HEADER:
          raise DataError(f"{path}: truncated TFRecord header at byte {pos}")
        (length,) = struct.unpack("<Q", header[:8])
        end = pos + _HEADER + length + _FOOTER
        if end > size:
          raise DataError(f"{path}: truncated TFRecord (record at byte {pos} claims "
                          f"{length} bytes, file has {size})")
        offsets.append(pos + _HEADER)
        lengths.append(length)
        pos = end
  except tf.errors.NotFoundError as e:
    raise DataError(f"{path}: TFRecord shard not found") from e
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def locate(manifest: Manifest) -> Tuple[List[str], np.ndarray, np.ndarray, np.ndarray]:
  """Where each record of a TFRecord index manifest lives.

  Returns ``(shards, shard_index int32 [N], offset int64 [N], length int64 [N])``.
  DataError when an id is not in the index or a shard holds fewer records than the index.
  """
  if not manifest.storage.is_tfrecords:
    raise ConfigError(f"manifest from {manifest.source!r} is not a TFRecord index "
                      f"(storage {manifest.storage.kind!r})")
  prefix = manifest.storage.tfrecord_prefix
  full = tfrecords_lib.tfrecords_manifest(prefix)
  ordinal_in_shard: Dict[str, Tuple[str, int]] = {}
  seen: Dict[str, int] = {}
  for record in full.records:
    k = seen.get(record.image_path, 0)
    seen[record.image_path] = k + 1
    ordinal_in_shard[record.example_id] = (record.image_path, k)
  shards = sorted({r.image_path for r in manifest.records})
  shard_ids = {s: i for i, s in enumerate(shards)}
  scans = {s: scan_shard(s) for s in shards}
  n = len(manifest)
  shard_of, offset, length = (np.zeros([n], np.int32), np.zeros([n], np.int64),
                              np.zeros([n], np.int64))
  for i, record in enumerate(manifest.records):
    where = ordinal_in_shard.get(record.example_id)
    if where is None:
      raise DataError(f"example id {record.example_id!r} is not in the TFRecord index "
                      f"{tfrecords_lib.index_path(prefix)}")
    shard, k = where
    offsets, lengths = scans[shard]
    if k >= len(offsets):
      raise DataError(f"{shard}: has {len(offsets)} records but the index "
                      f"{tfrecords_lib.index_path(prefix)} lists more")
    shard_of[i], offset[i], length[i] = shard_ids[shard], offsets[k], lengths[k]
  return shards, shard_of, offset, length


def _read_in_memory(shards: List[str], shard_of: np.ndarray, offset: np.ndarray,
                    length: np.ndarray) -> tf.Tensor:
  """string ``[N]``: the serialized Examples, each shard read once sequentially."""
  out: List[bytes] = [b""] * len(offset)
  for s, path in enumerate(shards):
    members = np.nonzero(shard_of == s)[0]
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
    for i in members:
      out[i] = data[offset[i]:offset[i] + length[i]]
  return tf.constant(out, tf.string)


def tfrecord_reader(manifest: Manifest, memory_bytes: int = DEFAULT_MEMORY_BYTES
                    ) -> Callable[[tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]:
  """record index (int scalar) → ``(encoded image bytes, name)`` string scalars.

  ``name`` ("shard#byte_offset (id)") labels decode errors. In memory when the records'
  serialized Examples total at most ``memory_bytes``, ranged reads otherwise (module
  docstring). A record whose Example id differs from the manifest's fails when read.
  """
  shards, shard_of, offset, length = locate(manifest)
  ids = tf.constant([r.example_id for r in manifest.records], tf.string)
  names = tf.constant([f"{shards[s]}#{o} ({r.example_id})" for s, o, r in
                       zip(shard_of, offset, manifest.records)], tf.string)
  if int(length.sum()) <= memory_bytes:
    table = _read_in_memory(shards, shard_of, offset, length)
    fetch = lambda index: tf.gather(table, index)
  else:
    shard_t, offset_t, length_t = (tf.constant(shard_of), tf.constant(offset),
                                   tf.constant(length))

    def read_range(shard, start, size):
      with tf.io.gfile.GFile(shards[int(shard)], "rb") as f:
        f.seek(int(start))
        return np.asarray(f.read(int(size)), dtype=object)

    def fetch(index):
      data = tf.numpy_function(
          read_range, [tf.gather(shard_t, index), tf.gather(offset_t, index),
                       tf.gather(length_t, index)], tf.string, stateful=False)
      data.set_shape([])
      return data

  spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
          "image/id": tf.io.FixedLenFeature([], tf.string, default_value="")}

  def read(index):
    example = tf.io.parse_single_example(fetch(index), spec)
    name = tf.gather(names, index)
    check = tf.debugging.Assert(
        tf.equal(example["image/id"], tf.gather(ids, index)),
        ["TFRecord record does not match its index entry:", name, "holds id",
         example["image/id"]])
    with tf.control_dependencies([check]):
      return tf.identity(example["image/encoded"]), name

  return read
