r"""Converts any data source into sharded, resized TFRecords.

Examples:
  python -m experiments.make_tfrecords --source=chexpert \
      --csv=/data/CheXpert-v1.0-small/train.csv --image_size=512 \
      --output_prefix=/data/tfrecords/chexpert_train --num_shards=128 --num_workers=16
  python -m experiments.make_tfrecords --source=folder --folder=/data/derm \
      --folder_labelled --output_prefix=/tmp/derm --image_size=448 --skip_bad_examples

Prints a progress line (count, rate, ETA) and, with --skip_bad_examples, a summary of the
skipped rows at the end. Exit status 2 with ``error: ...`` on a user error.
"""

from __future__ import annotations

import time

from absl import flags

from experiments import _cli, data_flags
from remedis_tf.data import tfrecords, tfds_source
from remedis_tf.data.manifest import Record, describe
from remedis_tf.errors import ConfigError

FLAGS = flags.FLAGS

data_flags.define_data_flags("")
flags.DEFINE_string("output_prefix", None, "Output path prefix (local or gs://): writes "
                    "PREFIX-00000-of-0000N.tfrecord, PREFIX.manifest.json, PREFIX.index.csv.")
flags.DEFINE_integer("num_shards", 0, "Number of shards; 0 = one per 1000 images.")
flags.DEFINE_integer("image_size", 0, "Downscale so the longest side is at most this many "
                     "pixels (aspect kept, never upscaled); 0 = keep the original size.")
flags.DEFINE_integer("num_workers", 4, "Parallel decode/resize/encode threads.")
flags.DEFINE_enum("bit_depth", "8", ["8", "16"], "PNG bit depth inside the records; 16 keeps "
                  "12/16-bit PNG/DICOM sources at full precision (twice the size).")
flags.DEFINE_float("progress_every_s", 10.0, "Seconds between progress lines.")


class Progress:
  """Prints 'done/total (rate img/s, ETA)' at most every ``every_s`` seconds."""

  def __init__(self, every_s: float):
    self.every_s, self.start, self.last = every_s, time.time(), 0.0

  def __call__(self, done: int, total: int) -> None:
    now = time.time()
    if now - self.last < self.every_s and done != total:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    eta = f", ETA {int((total - done) / rate) // 60}m{int((total - done) / rate) % 60:02d}s" \
        if total and rate > 0 else ""
    of = f"/{total}" if total else ""
    print(f"converted {done}{of} images ({rate:.1f} img/s{eta})", flush=True)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.output_prefix:
    raise ConfigError("--output_prefix is required")
  if FLAGS.image_size < 0 or FLAGS.num_shards < 0 or FLAGS.num_workers < 1:
    raise ConfigError("--image_size and --num_shards must be >= 0, --num_workers >= 1")
  image_size = FLAGS.image_size or None
  progress = Progress(FLAGS.progress_every_s)
  if FLAGS.source == "tfds":
    if not FLAGS.tfds_name:
      raise ConfigError("--tfds_name is required with --source=tfds")
    ds, info = tfds_source.load_tfds(FLAGS.tfds_name, FLAGS.tfds_split, FLAGS.tfds_data_dir)

    def examples():
      for ex in ds.as_numpy_iterator():
        rec = Record(image_path="", example_id=ex["id"].decode(),
                     labels=tuple(float(v) for v in ex["label"]),
                     mask=tuple(float(v) for v in ex["mask"]))
        yield rec, ex["image"]

    summary = tfrecords.write_tfrecords_from_examples(
        examples(), FLAGS.output_prefix, label_names=info.label_names, task=info.task,
        num_shards=FLAGS.num_shards or max(1, info.count // 1000 + 1),
        image_size=image_size, bit_depth=int(FLAGS.bit_depth), source=info.source,
        progress_callback=progress, total=max(info.count, 0))
  else:
    manifest = data_flags.manifest_from_flags("")
    if manifest.storage.is_tfrecords:
      raise ConfigError("--source=tfrecords is already TFRecords; nothing to convert")
    print(f"source: {describe(manifest)}", flush=True)
    summary = tfrecords.write_tfrecords(
        manifest, FLAGS.output_prefix, num_shards=FLAGS.num_shards or None,
        image_size=image_size, num_workers=FLAGS.num_workers, progress_callback=progress,
        skip_bad=FLAGS.skip_bad_examples, bit_depth=int(FLAGS.bit_depth))
  print(f"wrote {summary['count']} examples in {summary['num_shards']} shards "
        f"({summary['seconds']:.1f}s) to {FLAGS.output_prefix}-*; schema in "
        f"{summary['sidecar']}")
  if summary["skipped_summary"]:
    print(summary["skipped_summary"])


if __name__ == "__main__":
  _cli.run_main(main)
