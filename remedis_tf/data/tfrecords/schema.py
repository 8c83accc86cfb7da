"""The on-disk layout of a TFRecord shard set and the ``tf.train.Example`` features.

Paths for a prefix P (shards, sidecar, index), the sidecar's schema, and the Example
feature spec the writer and every reader share (see the package docstring).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.data import decode
from remedis_tf.data.manifest import Record, task_for_label_count
from remedis_tf.errors import DataError

SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.tfrecord$")


def shard_path(prefix: str, index: int, num_shards: int) -> str:
  return f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def sidecar_path(prefix: str) -> str:
  return f"{prefix}.manifest.json"


def index_path(prefix: str) -> str:
  return f"{prefix}.index.csv"


@dataclasses.dataclass(frozen=True)
class TFRecordSchema:
  """What a set of shards holds (from the sidecar)."""
  label_names: Tuple[str, ...]
  task: str
  count: int
  files: Tuple[str, ...]
  image_size: Optional[int] = None
  bit_depth: int = 8
  source: str = ""

  @property
  def num_labels(self) -> int:
    return len(self.label_names)


def _bytes_feature(value: str) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))


def _float_feature(values: Sequence[float]) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def make_example(record: Record, png: bytes) -> bytes:
  """Serialized ``tf.train.Example`` for one record and its encoded image."""
  feature = {
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
      "image/id": _bytes_feature(record.example_id),
      "image/patient": _bytes_feature(record.patient_id),
      "image/view": _bytes_feature(record.view),
      "image/site": _bytes_feature(record.site),
      "label": _float_feature(record.labels),
      "mask": _float_feature(record.mask),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized: tf.Tensor, num_labels: int) -> Dict[str, tf.Tensor]:
  """Serialized Example → dict of the raw features (image still encoded)."""
  spec = {
      "image/encoded": tf.io.FixedLenFeature([], tf.string),
      "image/id": tf.io.FixedLenFeature([], tf.string, default_value=""),
      "image/patient": tf.io.FixedLenFeature([], tf.string, default_value=""),
      "image/view": tf.io.FixedLenFeature([], tf.string, default_value=""),
      "image/site": tf.io.FixedLenFeature([], tf.string, default_value=""),
      "label": tf.io.FixedLenFeature([num_labels], tf.float32),
      "mask": tf.io.FixedLenFeature([num_labels], tf.float32),
  }
  return tf.io.parse_single_example(serialized, spec)


def split_prefix(prefix_or_pattern: str) -> Tuple[str, Optional[str]]:
  """A prefix, shard glob, shard file or sidecar path → (shard glob pattern, prefix or None
  when it cannot be derived)."""
  if any(c in prefix_or_pattern for c in "*?["):
    return prefix_or_pattern, None
  if SHARD_RE.search(prefix_or_pattern):  # a single shard file
    return prefix_or_pattern, SHARD_RE.sub("", prefix_or_pattern)
  if prefix_or_pattern.endswith(".manifest.json"):
    prefix = prefix_or_pattern[:-len(".manifest.json")]
    return f"{prefix}-*-of-*.tfrecord", prefix
  return f"{prefix_or_pattern}-*-of-*.tfrecord", prefix_or_pattern


def read_schema(prefix_or_pattern: str) -> TFRecordSchema:
  """Schema of a shard set: from the sidecar, else inferred from the first example.

  Raises DataError when no shard matches.
  """
  pattern, prefix = split_prefix(prefix_or_pattern)
  files = tuple(sorted(tf.io.gfile.glob(pattern)))
  if not files:
    raise DataError(f"{pattern}: no TFRecord files match")
  if prefix is None:
    prefix = SHARD_RE.sub("", files[0])
  side = sidecar_path(prefix)
  if tf.io.gfile.exists(side):
    meta = io_utils.read_json(side)
    try:
      return TFRecordSchema(label_names=tuple(meta["label_names"]), task=meta["task"],
                            count=int(meta["count"]), files=files,
                            image_size=meta.get("image_size"),
                            bit_depth=int(meta.get("bit_depth", 8)),
                            source=meta.get("source", ""))
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f"{side}: malformed TFRecord sidecar ({e})") from e
  try:
    first = next(iter(tf.data.TFRecordDataset(files[0]).take(1)), None)
  except tf.errors.OpError as e:
    raise DataError(f"{files[0]}: unreadable TFRecord ({decode.tf_error_text(e)})") from e
  if first is None:
    raise DataError(f"{files[0]}: empty TFRecord shard and no sidecar {side}")
  example = tf.train.Example.FromString(first.numpy())
  k = len(example.features.feature["label"].float_list.value)
  task = task_for_label_count(k)
  return TFRecordSchema(label_names=tuple(f"label_{i}" for i in range(k)), task=task,
                        count=-1, files=files)
