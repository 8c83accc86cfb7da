"""Reading a TFRecord shard set: as a ``tf.data`` stream of decoded examples, or its index as
a Manifest (no image bytes read) whose storage says where the images live."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import tensorflow as tf

from remedis_tf.data import csv_reader, decode
from remedis_tf.data.manifest import Manifest, Record, Storage
from remedis_tf.data.tfrecords.schema import (TFRecordSchema, index_path, parse_example,
                                              read_schema, split_prefix)
from remedis_tf.errors import DataError


def read_tfrecords(prefix_or_pattern: str, *, deterministic: bool = True,
                   shuffle_files: bool = False, seed: Optional[int] = None,
                   include_ids: Optional[Sequence[str]] = None,
                   cycle_length: int = 8, max_size: Optional[int] = None,
                   ) -> Tuple[tf.data.Dataset, TFRecordSchema]:
  """Shards → ``tf.data.Dataset`` of dicts and the schema.

  Elements: ``image`` float32 ``[H, W, 3]`` in [0, 1], ``label`` / ``mask`` float32 ``[K]``,
  ``id``, ``patient``, ``view``, ``site`` (string scalars). Not batched, not repeated.

  Args:
    prefix_or_pattern: the writer's out_prefix, a glob of shard files, or the sidecar.
    deterministic: fixed element order (interleave/map keep order) — set False for a
      little more throughput in training.
    shuffle_files: shuffle the shard order (with ``seed``) before interleaving.
    include_ids: keep only these example ids (e.g. a label-fraction subset selected on
      :func:`tfrecords_manifest`); filtering happens before image decoding.
    cycle_length: shards read concurrently.
    max_size: optional further downscaling at decode time.
  """
  schema = read_schema(prefix_or_pattern)
  k = schema.num_labels
  files = tf.data.Dataset.list_files(list(schema.files), shuffle=shuffle_files, seed=seed)
  ds = files.interleave(tf.data.TFRecordDataset,
                        cycle_length=max(1, min(cycle_length, len(schema.files))),
                        block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=deterministic)
  ds = ds.map(lambda s: parse_example(s, k), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=deterministic)
  if include_ids is not None:
    ids = sorted(set(include_ids))
    if not ids:
      raise DataError(f"{prefix_or_pattern}: include_ids is empty")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.ones([len(ids)], tf.int32)),
        default_value=0)
    ds = ds.filter(lambda ex: tf.equal(table.lookup(ex["image/id"]), 1))

  def finish(ex):
    return {"image": decode.decode_image_bytes(ex["image/encoded"], max_size=max_size),
            "label": ex["label"], "mask": ex["mask"], "id": ex["image/id"],
            "patient": ex["image/patient"], "view": ex["image/view"], "site": ex["image/site"]}

  ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  return ds, schema


def tfrecords_manifest(prefix: str) -> Manifest:
  """The ``P.index.csv`` of a shard set as a Manifest (no image bytes are read).

  Records' ``image_path`` is their shard file: decode them with :func:`read_tfrecords`
  (e.g. ``include_ids=[r.example_id for r in subset.records]``) or the pipelines, not
  ``load_image``. ``Manifest.storage`` is ``Storage.tfrecords(prefix)`` (what readers go
  by); ``Manifest.source`` reads ``"tfrecords:<prefix>"`` for humans.
  """
  _, derived = split_prefix(prefix)
  prefix = derived or prefix
  schema = read_schema(prefix)
  table = csv_reader.read_csv_table(index_path(prefix))
  names = schema.label_names
  table.require_columns(["id", "patient", "view", "site", "shard",
                         *[f"label:{n}" for n in names], *[f"mask:{n}" for n in names]])
  parent = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
  records = []
  for line, row in table.rows:
    try:
      labels = tuple(float(row[f"label:{n}"]) for n in names)
      mask = tuple(float(row[f"mask:{n}"]) for n in names)
    except ValueError as e:
      raise DataError(f"{table.path}:{line}: bad label/mask number ({e})") from e
    records.append(Record(image_path=parent + row["shard"], example_id=row["id"],
                          labels=labels, mask=mask, patient_id=row["patient"],
                          view=row["view"], site=row["site"], source_row=line))
  return Manifest(records=tuple(records), label_names=names, task=schema.task,
                  source=f"tfrecords:{prefix}", storage=Storage.tfrecords(prefix))
