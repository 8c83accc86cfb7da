"""TensorFlow Datasets (e.g. ``patch_camelyon``) as a source, when TFDS is installed.

TFDS is an optional extra (``pip install remedis_tf[tfds]``); the data must already be
prepared in ``data_dir`` (this machine cannot download). TFDS examples have no files, so
they are either used directly as a ``tf.data.Dataset`` in the project's dict format or
converted to TFRecords with ``experiments/make_tfrecords.py --source=tfds``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf

from remedis_tf.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class TfdsInfo:
  """Label schema of a converted TFDS split."""
  label_names: Tuple[str, ...]
  task: str
  count: int
  source: str


def import_tfds():
  """Imports tensorflow_datasets or raises ConfigError saying how to install it."""
  try:  # optional dependency (the tfds extra): imported only when a TFDS source is used
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError("TFDS sources need the optional package tensorflow-datasets: "
                      "pip install 'remedis_tf[tfds]' (or pip install tensorflow-datasets)"
                      ) from e
  return tfds


def convert_examples(ds: tf.data.Dataset, num_classes: Optional[int], *,
                     image_key: str = "image", label_key: Optional[str] = "label",
                     id_key: Optional[str] = None, id_prefix: str = "") -> tf.data.Dataset:
  """TFDS-style dicts → the project's example dicts.

  Input elements: ``{image_key: uint8/uint16 [H, W, C] (C 1 or 3), label_key: int class}``.
  Output: ``image`` float32 ``[H, W, 3]`` in [0, 1]; ``label``/``mask`` float32 ``[K]`` —
  binary (num_classes 2): K = 1 with label = class id; multiclass: one-hot over
  ``num_classes``; unlabelled (``label_key`` None): K = 0; ``id`` (``id_key`` feature or
  ``id_prefix`` + running index) and empty ``patient``/``view``/``site``.
  """
  if label_key is not None and (num_classes is None or num_classes < 2):
    raise ConfigError(f"num_classes must be >= 2 for a labelled TFDS source, got {num_classes}")

  def convert(index, ex):
    if image_key not in ex:
      raise DataError(f"TFDS example has no {image_key!r} feature (has {sorted(ex)})")
    image = ex[image_key]
    top = 65535.0 if image.dtype == tf.uint16 else 255.0
    image = tf.cast(image, tf.float32) / (1.0 if image.dtype.is_floating else top)
    if image.shape.rank == 2:
      image = image[..., None]
    image = tf.cond(tf.shape(image)[-1] < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]),
                    lambda: image[..., :3])
    image.set_shape([None, None, 3])
    if label_key is None:
      label = tf.zeros([0], tf.float32)
    else:
      cls = tf.cast(ex[label_key], tf.int32)
      if num_classes == 2:
        label = tf.cast(tf.reshape(cls, [1]), tf.float32)
      else:
        label = tf.one_hot(cls, num_classes, dtype=tf.float32)
    if id_key is not None:
      ex_id = tf.strings.as_string(ex[id_key]) if ex[id_key].dtype != tf.string else ex[id_key]
    else:
      ex_id = tf.strings.join([id_prefix, tf.strings.as_string(index)])
    empty = tf.constant("")
    return {"image": image, "label": label, "mask": tf.ones_like(label), "id": ex_id,
            "patient": empty, "view": empty, "site": empty}

  return ds.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def load_tfds(name: str, split: str = "train", data_dir: Optional[str] = None, *,
              image_key: str = "image", label_key: Optional[str] = "label",
              ) -> Tuple[tf.data.Dataset, TfdsInfo]:
  """A prepared TFDS split → (dataset of project example dicts, schema).

  Raises ConfigError when TFDS is missing or the dataset/split is not prepared locally.
  """
  tfds = import_tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    info = builder.info
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except Exception as e:  # TFDS raises assorted types for unknown names / missing data
    raise ConfigError(f"TFDS dataset {name!r} split {split!r} is not available locally "
                      f"(data_dir={data_dir}): {str(e).splitlines()[0] if str(e) else e}") from e
  num_classes = None
  names: Tuple[str, ...] = ()
  task = "unlabelled"
  if label_key is not None:
    feature = info.features[label_key]
    num_classes = int(feature.num_classes)
    class_names = tuple(str(n) for n in feature.names)
    if num_classes == 2:
      names, task = (label_key,), "binary"
    else:
      names, task = class_names, "multiclass"
  count = int(info.splits[split].num_examples) if split in info.splits else -1
  converted = convert_examples(ds, num_classes, image_key=image_key, label_key=label_key,
                               id_prefix=f"{name}/{split}/")
  return converted, TfdsInfo(label_names=names, task=task, count=count,
                             source=f"tfds:{name}/{split}")
