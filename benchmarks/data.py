"""Synthetic benchmark images: 256-px PNGs (smooth gradient + noise, so PNG decoding does
real work) and the same images as TFRecords."""

from __future__ import annotations

import os

import numpy as np

_PNG_DIR = "png"
_LABELS = 5


def tfrecord_prefix(data_dir: str) -> str:
  return os.path.join(data_dir, "tfrecords", "bench")


def png_manifest(data_dir: str):
  """Manifest of the PNGs in ``data_dir/png`` (sorted), 5 multi-label labels each."""
  from remedis_tf.data.manifest import Manifest, Record  # pylint: disable=g-import-not-at-top
  folder = os.path.join(data_dir, _PNG_DIR)
  names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
  records = []
  for i, name in enumerate(names):
    labels = tuple(float((i >> j) & 1) for j in range(_LABELS))
    records.append(Record(image_path=os.path.join(folder, name), example_id=name,
                          labels=labels, mask=(1.0,) * _LABELS, patient_id=f"p{i // 2}"))
  return Manifest(records=tuple(records), label_names=tuple(f"l{j}" for j in range(_LABELS)),
                  task="multilabel", source=os.path.join(folder, "<bench>"))


def write_dataset(data_dir: str, count: int, size: int = 256, num_shards: int = 4) -> None:
  """Writes ``count`` RGB PNGs of ``size``² and their TFRecords under ``data_dir``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from remedis_tf.data import tfrecords  # pylint: disable=g-import-not-at-top
  folder = os.path.join(data_dir, _PNG_DIR)
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  for i in range(count):
    base = 0.5 + 0.4 * np.sin(6.0 * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)))
    pixels = base[..., None] * rng.uniform(0.6, 1.0, 3) + rng.normal(0, 0.05, (size, size, 3))
    data = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    with open(os.path.join(folder, f"img{i:05d}.png"), "wb") as f:
      f.write(tf.io.encode_png(data).numpy())
  os.makedirs(os.path.dirname(tfrecord_prefix(data_dir)), exist_ok=True)
  tfrecords.write_tfrecords(png_manifest(data_dir), tfrecord_prefix(data_dir),
                            num_shards=num_shards, num_workers=2)
