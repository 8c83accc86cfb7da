"""tf.data pipelines: contrastive (SimCLR / MICLe), supervised fine-tuning and evaluation.

Exact resumability and topology independence: a training stream is a pure function of
(seed, position). Epoch e visits the items in the order
``stateless_shuffle(range(N), seed=(seed, e))`` (no shuffle buffer); the epochs are
concatenated and the example at global position p = step·global_batch + i is augmented with
a seed derived from (seed, p). Input pipeline k of n takes positions
``[k·B/n, (k+1)·B/n)`` of every global batch, so the union of all replicas' batches at
step t is the one-replica batch at step t, with the same views. ``start_step`` jumps to
position start_step·B on the index stream, before anything is decoded.

Contrastive epochs are cut to whole global batches (⌊N/B⌋·B items, a different random
remainder left out each epoch) so an image (or, with MICLe, a case) never appears twice in
one batch, which would create false negatives. Supervised epochs use every item.

Training datasets yield dicts of numeric tensors with static batch shapes; evaluation
datasets also yield ``"id"`` and ``"patient"`` strings and keep the last partial batch.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from remedis_tf.data import augment as augment_lib
from remedis_tf.data import decode
from remedis_tf.data import micle as micle_lib
from remedis_tf.data import record_source
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError

AUTOTUNE = tf.data.AUTOTUNE
# Separates the augmentation seed stream from the shuffle seed stream.
_AUGMENT_SALT = 0x5EED
_VIEW1, _VIEW2, _PAIR = 1, 2, 3
TFRECORDS_MEMORY_BYTES = record_source.DEFAULT_MEMORY_BYTES


def _source(manifest: Manifest) -> str:
  return manifest.source or "<in-memory manifest>"


def _layout(global_batch_size: int, input_context) -> Tuple[int, int, int]:
  """→ (num_pipelines, pipeline_id, per_replica_batch)."""
  if (not isinstance(global_batch_size, (int, np.integer)) or isinstance(global_batch_size, bool)
      or global_batch_size <= 0):
    raise ConfigError(f"global_batch_size={global_batch_size!r}: must be a positive integer")
  if input_context is None:
    return 1, 0, int(global_batch_size)
  replicas = input_context.num_replicas_in_sync
  pipelines = input_context.num_input_pipelines
  if global_batch_size % replicas:
    raise ConfigError(f"global_batch_size={global_batch_size} is not divisible by the "
                      f"{replicas} replicas in sync")
  if global_batch_size % pipelines or replicas % pipelines:
    raise ConfigError(f"global_batch_size={global_batch_size} and {replicas} replicas cannot "
                      f"be split evenly over {pipelines} input pipelines")
  per_replica = input_context.get_per_replica_batch_size(global_batch_size)
  return pipelines, input_context.input_pipeline_id, per_replica


def _check_size(num_items: int, global_batch_size: int, manifest: Manifest, what: str):
  if num_items == 0:
    raise DataError(f"dataset {_source(manifest)} is empty")
  if num_items < global_batch_size:
    raise DataError(f"dataset {_source(manifest)} has {num_items} {what}, fewer than one "
                    f"global batch ({global_batch_size})")


def _seed_pair(seed: int, salt: int) -> tf.Tensor:
  return tf.constant([int(seed), salt], tf.int64)


def index_stream(num_items: int, epoch_length: int, seed: int,
                 start_position: int = 0) -> tf.data.Dataset:
  """Infinite ``(item_index int64, position int64)`` stream from ``start_position`` on.

  Epoch e (positions ``[e·L, (e+1)·L)``, L = ``epoch_length`` <= ``num_items``) yields the
  first L entries of ``stateless_shuffle(range(num_items), seed=(seed, e))``.
  """
  start_epoch, offset = divmod(int(start_position), int(epoch_length))
  seed64 = tf.constant(int(seed), tf.int64)

  def one_epoch(epoch):
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(num_items, dtype=tf.int64), seed=tf.stack([seed64, epoch]))[:epoch_length]
    positions = epoch * epoch_length + tf.range(epoch_length, dtype=tf.int64)
    first = tf.where(epoch == start_epoch, tf.constant(offset, tf.int64), 0)
    return tf.data.Dataset.from_tensor_slices((perm[first:], positions[first:]))

  return tf.data.Dataset.counter(start_epoch, dtype=tf.int64).flat_map(one_epoch)


def _take_share(ds: tf.data.Dataset, global_batch_size: int, pipelines: int,
                pipeline_id: int) -> tf.data.Dataset:
  """Keeps this input pipeline's contiguous share of every global batch of positions."""
  if pipelines == 1:
    return ds
  share = global_batch_size // pipelines
  lo, hi = pipeline_id * share, (pipeline_id + 1) * share
  return (ds.batch(global_batch_size, drop_remainder=True)
          .map(lambda i, p: (i[lo:hi], p[lo:hi])).unbatch())


def _file_reader(manifest: Manifest) -> Callable[[tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]:
  """record index → (encoded bytes, path for error messages) of an image-file manifest."""
  paths = tf.constant(manifest.paths(), tf.string)

  def read(index):
    path = tf.gather(paths, index)
    return tf.io.read_file(path), path

  return read


def _make_loader(manifest: Manifest, max_image_size: Optional[int], cache: bool,
                 tfrecords_memory_bytes: int = TFRECORDS_MEMORY_BYTES
                 ) -> Callable[[tf.Tensor], tf.Tensor]:
  """record index (int scalar) → float32 ``[H, W, 3]`` in [0, 1].

  Image-file manifests read the record's file; TFRecord index manifests
  (:func:`remedis_tf.data.tfrecords.tfrecords_manifest`) read the record's Example from
  its shard (see :mod:`remedis_tf.data.record_source`).
  """
  if max_image_size is not None and max_image_size <= 0:
    raise ConfigError(f"max_image_size={max_image_size!r}: must be a positive integer or None")
  if manifest.storage.is_tfrecords:
    read = record_source.tfrecord_reader(manifest, tfrecords_memory_bytes)
  else:
    read = _file_reader(manifest)

  def load_index(index):
    data, name = read(index)
    return decode.decode_image_bytes(data, max_size=max_image_size, name=name,
                                     dicom_options=manifest.dicom)

  if not cache:
    return load_index
  return _cached_loader(manifest, load_index)


def _cached_loader(manifest: Manifest, load_index) -> Callable[[tf.Tensor], tf.Tensor]:
  """Decodes every image once into one uint16 buffer; returns an index → image loader.

  Meant for small datasets (2 bytes per pixel and channel are held in memory); values are
  quantised to 1/65535, which is exact for 8- and 16-bit sources.
  """
  decoded = (tf.data.Dataset.range(len(manifest))
             .map(lambda i: tf.cast(tf.round(load_index(i) * 65535.0), tf.uint16),
                  num_parallel_calls=AUTOTUNE, deterministic=True))
  chunks, shapes = [], []
  for image in decoded:
    shapes.append(image.shape.as_list())
    chunks.append(tf.reshape(image, [-1]))
  buffer = tf.concat(chunks, 0)
  shapes_t = tf.constant(shapes, tf.int64)
  sizes = np.prod(np.asarray(shapes, np.int64), axis=1)
  offsets = tf.constant(np.concatenate([[0], np.cumsum(sizes)[:-1]]), tf.int64)

  def load_cached(index):
    shape = tf.gather(shapes_t, index)
    flat = tf.slice(buffer, [tf.gather(offsets, index)], [tf.reduce_prod(shape)])
    image = tf.cast(tf.reshape(flat, shape), tf.float32) / 65535.0
    image.set_shape([None, None, 3])
    return image

  return load_cached


def _options(deterministic: Optional[bool]) -> tf.data.Options:
  options = tf.data.Options()
  if deterministic is not None:
    options.deterministic = deterministic
  # Sharding is done explicitly by position; auto-sharding would break the contract.
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  return options


def contrastive_dataset(manifest: Manifest, *, augment: augment_lib.AugmentConfig,
                        global_batch_size: int, seed: int = 0, micle: bool = False,
                        input_context: Optional[tf.distribute.InputContext] = None,
                        start_step: int = 0, cache: bool = False,
                        deterministic: Optional[bool] = None,
                        max_image_size: Optional[int] = None,
                        tfrecords_memory_bytes: int = TFRECORDS_MEMORY_BYTES
                        ) -> tf.data.Dataset:
  """Infinite dataset of per-replica batches of two augmented views.

  Yields ``{"view1", "view2": float32 [b, S, S, 3] in [0, 1]}`` plus ``"label"``,
  ``"mask"`` ``[b, K]`` when the manifest is labelled (taken from view 1's image, for the
  online linear probe). b = per-replica batch (``global_batch_size`` without
  ``input_context``). With ``micle`` the stream runs over cases (see ``micle.py``).
  ``cache`` keeps all decoded images in memory (small datasets only); ``max_image_size``
  downscales decoded images whose longer side exceeds it (before any augmentation);
  ``deterministic=False`` lets parallel map reorder examples (faster, breaks exactness).
  A TFRecord index manifest (``tfrecords.tfrecords_manifest``) is read from its shards,
  in memory when its encoded examples total at most ``tfrecords_memory_bytes``, else by
  ranged reads (see ``record_source``).
  """
  if not isinstance(augment, augment_lib.AugmentConfig):
    raise ConfigError(f"augment must be an AugmentConfig, got {type(augment).__name__}")
  pipelines, pipeline_id, per_replica = _layout(global_batch_size, input_context)
  if start_step < 0:
    raise ConfigError(f"start_step={start_step}: must be >= 0")
  load = (_make_loader(manifest, max_image_size, cache, tfrecords_memory_bytes)
          if len(manifest) else None)
  labelled = manifest.num_labels > 0
  labels = tf.constant(manifest.label_matrix()) if labelled else None
  masks = tf.constant(manifest.mask_matrix()) if labelled else None
  base = _seed_pair(seed, _AUGMENT_SALT)

  if micle:
    table_np, counts_np = micle_lib.case_table(manifest) if len(manifest) else (
        np.zeros([0, 1], np.int32), np.zeros([0], np.int32))
    num_items = len(counts_np)
    _check_size(num_items, global_batch_size, manifest, "cases")
    table, counts = tf.constant(table_np), tf.constant(counts_np)

    def images_of(item, key):
      s1, s2 = micle_lib.choose_pair(tf.gather(counts, item), _fold(key, _PAIR))
      row = tf.gather(table, item)
      r1, r2 = tf.gather(row, s1), tf.gather(row, s2)
      first = load(r1)
      second = tf.cond(tf.equal(r1, r2), lambda: first, lambda: load(r2))
      return first, second, r1
  else:
    num_items = len(manifest)
    _check_size(num_items, global_batch_size, manifest, "images")

    def images_of(item, key):
      del key
      image = load(item)
      return image, image, item

  def make_example(item, position):
    key = _fold(base, position)
    first, second, record = images_of(item, key)
    out = {"view1": augment_lib.augment_view(first, augment, _fold(key, _VIEW1)),
           "view2": augment_lib.augment_view(second, augment, _fold(key, _VIEW2))}
    if labelled:
      out["label"] = tf.gather(labels, record)
      out["mask"] = tf.gather(masks, record)
    return out

  epoch_length = (num_items // global_batch_size) * global_batch_size
  ds = index_stream(num_items, epoch_length, seed, start_step * global_batch_size)
  ds = _take_share(ds, global_batch_size, pipelines, pipeline_id)
  ds = ds.map(make_example, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  ds = ds.batch(per_replica, drop_remainder=True).prefetch(AUTOTUNE)
  return ds.with_options(_options(deterministic))


def supervised_dataset(manifest: Manifest, *, augment: Optional[augment_lib.AugmentConfig],
                       image_size: int, global_batch_size: int, seed: int = 0,
                       input_context: Optional[tf.distribute.InputContext] = None,
                       start_step: int = 0,
                       crop_fraction: float = augment_lib.EVAL_CROP_FRACTION,
                       cache: bool = False, deterministic: Optional[bool] = None,
                       max_image_size: Optional[int] = None,
                       tfrecords_memory_bytes: int = TFRECORDS_MEMORY_BYTES
                       ) -> tf.data.Dataset:
  """Infinite dataset of per-replica training batches for fine-tuning.

  Yields ``{"image": float32 [b, S, S, 3] in [0, 1], "label": [b, K], "mask": [b, K]}``.
  Images go through ``finetune_augment(augment)`` (``augment.image_size`` must equal
  ``image_size``), or through ``eval_preprocess(image_size, crop_fraction)`` when
  ``augment`` is None. Ordering, sharding and resumption as in the module docstring;
  TFRecord index manifests as in :func:`contrastive_dataset`.
  """
  if augment is not None and augment.image_size != image_size:
    raise ConfigError(f"augment.image_size={augment.image_size} differs from "
                      f"image_size={image_size}")
  pipelines, pipeline_id, per_replica = _layout(global_batch_size, input_context)
  if start_step < 0:
    raise ConfigError(f"start_step={start_step}: must be >= 0")
  _check_size(len(manifest), global_batch_size, manifest, "images")
  if manifest.num_labels == 0:
    raise DataError(f"dataset {_source(manifest)} has no labels; supervised training needs them")
  load = _make_loader(manifest, max_image_size, cache, tfrecords_memory_bytes)
  labels, masks = tf.constant(manifest.label_matrix()), tf.constant(manifest.mask_matrix())
  base = _seed_pair(seed, _AUGMENT_SALT)

  def make_example(item, position):
    image = load(item)
    if augment is None:
      image = augment_lib.eval_preprocess(image, image_size, crop_fraction)
    else:
      image = augment_lib.finetune_augment(image, augment, _fold(base, position))
    return {"image": image, "label": tf.gather(labels, item), "mask": tf.gather(masks, item)}

  ds = index_stream(len(manifest), len(manifest), seed, start_step * global_batch_size)
  ds = _take_share(ds, global_batch_size, pipelines, pipeline_id)
  ds = ds.map(make_example, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  ds = ds.batch(per_replica, drop_remainder=True).prefetch(AUTOTUNE)
  return ds.with_options(_options(deterministic))


def eval_dataset(manifest: Manifest, *, image_size: int, batch_size: int,
                 crop_fraction: float = augment_lib.EVAL_CROP_FRACTION,
                 max_image_size: Union[int, str, None] = "working",
                 tfrecords_memory_bytes: int = TFRECORDS_MEMORY_BYTES) -> tf.data.Dataset:
  """One pass over the manifest in order, last partial batch kept.

  Yields ``{"image": [b, S, S, 3], "label": [b, K], "mask": [b, K], "id": string [b],
  "patient": string [b]}``; images centre-cropped (``crop_fraction``) and resized.
  ``patient`` is the record's patient id, or a unique per-record key when it has none.
  TFRecord index manifests as in :func:`contrastive_dataset`.

  ``max_image_size``: ``"working"`` (default) downscales each image right after decoding
  to a longest side of ``decode.working_size(image_size)`` = ``max(4·S, 1024)`` pixels
  (area resampling; smaller images are untouched), as training and ``evaluate`` /
  ``evaluate_model`` do, so this yields the very batches they score; an int sets that
  side; None keeps full-size images (slower, more memory, and slightly different pixels
  after the final resize for images larger than the working size).
  """
  if len(manifest) == 0:
    raise DataError(f"dataset {_source(manifest)} is empty")
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ConfigError(f"batch_size={batch_size!r}: must be a positive integer")
  if max_image_size == "working":
    max_image_size = decode.working_size(image_size)
  load = _make_loader(manifest, max_image_size, False, tfrecords_memory_bytes)
  columns = {
      "index": np.arange(len(manifest), dtype=np.int64),
      "label": manifest.label_matrix(),
      "mask": manifest.mask_matrix(),
      "id": np.asarray([r.example_id for r in manifest.records], object),
      "patient": np.asarray(manifest.patients(), object),
  }

  def make_example(row: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    row = dict(row)
    image = load(row.pop("index"))
    row["image"] = augment_lib.eval_preprocess(image, image_size, crop_fraction)
    return row

  ds = tf.data.Dataset.from_tensor_slices(columns)
  ds = ds.map(make_example, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(batch_size).prefetch(AUTOTUNE).with_options(_options(True))


def _fold(key: tf.Tensor, data) -> tf.Tensor:
  return tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64))
