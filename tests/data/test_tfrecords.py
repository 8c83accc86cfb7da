"""Sharded TFRecords: round trip, resizing, skipping, index manifest, id filtering."""

import json

import numpy as np
import pytest

import image_files as F
from remedis_tf.data import tfrecords
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.errors import DataError

# Tolerances here (docs/testing.md):
# derived. Images written at the depth they were made with come back as the same integers;
# integer / (2^bits - 1) in float32 is within 2^-24 (6e-8) of the float64 value: atol 1e-6.
# The area-downscaled 16-bit ramp: box means of a linear ramp, off by at most the 16-bit
# half-step (7.6e-6) plus float32 rounding: atol 1e-4.

RNG = np.random.RandomState(2)


def _manifest(tmp_path, n=7, bad=()):
  records, images = [], {}
  for i in range(n):
    if i % 3 == 0:
      img = RNG.randint(0, 256, (10 + i, 12, 3)).astype(np.uint8)
      data = F.png_bytes(img)
      images[f"id{i}"] = img / 255.0
    else:
      img = RNG.randint(0, 256, (12, 9 + i)).astype(np.uint8)
      data = F.png_bytes(img)
      images[f"id{i}"] = np.repeat(img[..., None] / 255.0, 3, -1)
    if i in bad:
      data = b"garbage"
    path = F.write(tmp_path / f"img{i}.png", data)
    records.append(Record(image_path=path, example_id=f"id{i}", labels=(i % 2, 1.0 - i % 2),
                          mask=(1.0, float(i % 3 != 1)), patient_id=f"p{i // 2}",
                          view="frontal" if i % 2 else "lateral", site="s", source_row=i + 2))
  m = Manifest(records=tuple(records), label_names=("A", "B"), task="multilabel",
               source="x.csv")
  return m, images


def test_round_trip_exact(tmp_path):
  m, images = _manifest(tmp_path)
  calls = []
  summary = tfrecords.write_tfrecords(
      m, str(tmp_path / "out" / "ds"), num_shards=3, num_workers=2,
      progress_callback=lambda d, t: calls.append((d, t)))
  assert summary["count"] == 7 and summary["skipped"] == 0 and len(summary["files"]) == 3
  assert calls[-1] == (7, 7) and len(calls) == 7
  side = json.load(open(tmp_path / "out" / "ds.manifest.json"))
  assert side["label_names"] == ["A", "B"] and side["task"] == "multilabel" and side["count"] == 7
  ds, schema = tfrecords.read_tfrecords(str(tmp_path / "out" / "ds"))
  assert schema.label_names == ("A", "B") and len(schema.files) == 3
  got = {ex["id"].decode(): ex for ex in ds.as_numpy_iterator()}
  assert sorted(got) == sorted(images)
  for r in m.records:
    ex = got[r.example_id]
    np.testing.assert_allclose(ex["image"], images[r.example_id], atol=1e-6)
    np.testing.assert_array_equal(ex["label"], r.labels)
    np.testing.assert_array_equal(ex["mask"], r.mask)
    assert ex["patient"].decode() == r.patient_id and ex["view"].decode() == r.view
  # Deterministic order: two reads agree; round-robin interleave gives the written order.
  order = [ex["id"].decode() for ex in ds.as_numpy_iterator()]
  assert order == [e["id"].decode() for e in ds.as_numpy_iterator()]
  assert order == [f"id{i}" for i in range(7)]


def test_resize_16bit_and_glob(tmp_path):
  grey = np.tile(np.linspace(0, 65535, 80), (40, 1)).astype(np.uint16)
  path = F.write(tmp_path / "g.png", F.png_bytes(grey))
  m = Manifest(records=(Record(image_path=path, example_id="g"),), source="mem")
  tfrecords.write_tfrecords(m, str(tmp_path / "r"), image_size=20, bit_depth=16)
  ds, schema = tfrecords.read_tfrecords(str(tmp_path / "r-*-of-*.tfrecord"))
  assert schema.task == "unlabelled" and schema.image_size == 20 and schema.bit_depth == 16
  ex = next(ds.as_numpy_iterator())
  assert ex["image"].shape == (10, 20, 3) and ex["label"].shape == (0,)
  np.testing.assert_allclose(ex["image"][5, :, 0], np.linspace(0, 1, 80).reshape(20, 4).mean(1),
                             atol=1e-4)


def test_skip_bad_and_fail(tmp_path):
  m, _ = _manifest(tmp_path, bad=(1, 4))
  with pytest.raises(DataError, match=r"img1\.png \(row 3 of x\.csv\): not a PNG"):
    tfrecords.write_tfrecords(m, str(tmp_path / "f"), num_shards=2)
  assert not list(tmp_path.glob("f-*")) and not (tmp_path / "f.manifest.json").exists()
  summary = tfrecords.write_tfrecords(m, str(tmp_path / "s"), num_shards=2, skip_bad=True)
  assert summary["count"] == 5 and summary["skipped"] == 2
  assert [b[0] for b in summary["bad_examples"]] == [m.records[1].image_path,
                                                     m.records[4].image_path]
  assert "skipped 2 of 7" in summary["skipped_summary"]
  ds, _ = tfrecords.read_tfrecords(str(tmp_path / "s"))
  assert sorted(e["id"].decode() for e in ds.as_numpy_iterator()) == [
      "id0", "id2", "id3", "id5", "id6"]


def test_index_manifest_and_id_filter(tmp_path):
  m, _ = _manifest(tmp_path)
  tfrecords.write_tfrecords(m, str(tmp_path / "ds"), num_shards=2)
  idx = tfrecords.tfrecords_manifest(str(tmp_path / "ds"))
  assert idx.storage.is_tfrecords and idx.storage.tfrecord_prefix == str(tmp_path / "ds")
  assert [r.example_id for r in idx.records] == [r.example_id for r in m.records]
  np.testing.assert_array_equal(idx.label_matrix(), m.label_matrix())
  np.testing.assert_array_equal(idx.mask_matrix(), m.mask_matrix())
  assert idx.patients() == m.patients()
  keep = [r.example_id for r in idx.subset([0, 3, 5]).records]
  ds, _ = tfrecords.read_tfrecords(str(tmp_path / "ds"), include_ids=keep)
  assert sorted(e["id"].decode() for e in ds.as_numpy_iterator()) == sorted(keep)
  # Rewriting with fewer shards removes the old shards so globs do not mix sets.
  tfrecords.write_tfrecords(m, str(tmp_path / "ds"), num_shards=1)
  assert len(list(tmp_path.glob("ds-*.tfrecord"))) == 1
  with pytest.raises(DataError, match="no TFRecord files match"):
    tfrecords.read_tfrecords(str(tmp_path / "nothing"))
