"""Pipeline contracts: shapes, determinism, topology independence, exact resumption."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from remedis_tf.data import augment as A
from remedis_tf.data import label_fraction, tfrecords
from remedis_tf.data import pipeline as P
from remedis_tf.data.manifest import Manifest, Record, Storage
from remedis_tf.errors import ConfigError, DataError

# Tolerances here (docs/testing.md):
# the shard, resumed and cached pipelines apply the same per-example ops (augmentation
# runs before batching) to the same images in one process, so they are bit-equal here (the
# _checksums comparisons assert exactly that where they are used); atol 1e-6 (16 ulps at 1.0)
# is not a rounding allowance but a readable diff, while a wrong example, seed or view is off
# by > 0.01. Comparisons within one machine only, never against stored numbers.

S = 16
AUG = A.get_preset("generic", image_size=S)


def _write_images(tmp_path, n, k=2, patients=None, sizes=None):
  """n PNGs of varying size/colour (8-bit RGB and grayscale), labelled with K=k labels."""
  rng = np.random.default_rng(0)
  records = []
  for i in range(n):
    h, w = sizes[i] if sizes else (24 + (i % 3) * 8, 32 - (i % 2) * 8)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pixels[..., 0] = (i * 37) % 256  # per-image signature
    path = os.path.join(str(tmp_path), f"img{i}.png")
    img = Image.fromarray(pixels[..., 0] if i % 4 == 3 else pixels)
    img.save(path)
    labels = tuple(float((i >> j) & 1) for j in range(k))
    records.append(Record(image_path=path, example_id=f"id{i}", labels=labels,
                          mask=(1.0,) * k,
                          patient_id=patients[i] if patients else f"p{i // 2}"))
  task = "multilabel" if k else "unlabelled"
  return Manifest(records=tuple(records), label_names=tuple(f"l{j}" for j in range(k)),
                  task=task, source=str(tmp_path / "manifest.csv"))


def _batches(ds, n):
  return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def _checksums(batch, keys=("view1", "view2")):
  """Per-example fingerprints (sorted) so batches can be compared as sets."""
  rows = np.concatenate([batch[k].reshape(len(batch[k]), -1) for k in keys], axis=1)
  return sorted(np.round(rows.astype(np.float64) @ np.linspace(1, 2, rows.shape[1]), 4))


def _context(k, n=2):
  return tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=k,
                                    num_replicas_in_sync=n)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
  return _write_images(tmp_path_factory.mktemp("imgs"), 10)


def test_contrastive_contract_and_same_seed_reproduces(manifest):
  ds = P.contrastive_dataset(manifest, augment=AUG, global_batch_size=4, seed=3)
  spec = ds.element_spec
  assert set(spec) == {"view1", "view2", "label", "mask"}
  assert spec["view1"].shape == (4, S, S, 3) and spec["label"].shape == (4, 2)
  assert all(s.dtype != tf.string for s in spec.values())
  first = _batches(ds, 5)
  again = _batches(P.contrastive_dataset(manifest, augment=AUG, global_batch_size=4,
                                         seed=3), 5)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  b0 = first[0]
  assert 0.0 <= b0["view1"].min() and b0["view1"].max() <= 1.0
  assert np.abs(b0["view1"] - b0["view2"]).max() > 1e-3
  other = _batches(P.contrastive_dataset(manifest, augment=AUG, global_batch_size=4,
                                         seed=4), 1)[0]
  assert np.abs(other["view1"] - b0["view1"]).max() > 1e-3


def test_unlabelled_manifest_yields_views_only(tmp_path):
  m = _write_images(tmp_path, 4, k=0)
  ds = P.contrastive_dataset(m, augment=AUG, global_batch_size=2)
  assert set(ds.element_spec) == {"view1", "view2"}


def test_index_stream_epochs_are_truncated_stateless_permutations(manifest):
  stream = P.index_stream(10, 8, seed=5)
  items = np.array([int(i) for i, _ in stream.take(24)])
  positions = np.array([int(p) for _, p in stream.take(24)])
  np.testing.assert_array_equal(positions, np.arange(24))
  for e in range(3):
    epoch = items[8 * e:8 * (e + 1)]
    assert len(set(epoch)) == 8  # each epoch: 8 distinct of the 10 items
    expected = tf.random.experimental.stateless_shuffle(
        tf.range(10, dtype=tf.int64), seed=tf.constant([5, e], tf.int64)).numpy()[:8]
    np.testing.assert_array_equal(epoch, expected)
  resumed = np.array([int(i) for i, _ in P.index_stream(10, 8, seed=5, start_position=11)
                      .take(5)])
  np.testing.assert_array_equal(resumed, items[11:16])


@pytest.mark.parametrize("micle", [False, True])
def test_two_pipelines_reconstruct_the_single_pipeline_batch(manifest, micle):
  kwargs = dict(augment=AUG, global_batch_size=4, seed=1, micle=micle)
  single = _batches(P.contrastive_dataset(manifest, **kwargs), 3)
  shards = [_batches(P.contrastive_dataset(manifest, input_context=_context(k), **kwargs), 3)
            for k in range(2)]
  for step in range(3):
    assert shards[0][step]["view1"].shape == (2, S, S, 3)
    union = {key: np.concatenate([shards[0][step][key], shards[1][step][key]])
             for key in single[step]}
    assert _checksums(union) == _checksums(single[step])
    np.testing.assert_allclose(union["view1"], single[step]["view1"], atol=1e-6)


def test_start_step_equals_kth_batch_of_fresh_pipeline(manifest):
  fresh = _batches(P.contrastive_dataset(manifest, augment=AUG, global_batch_size=4,
                                         seed=2), 6)
  for k in (1, 2, 5):  # 5 crosses an epoch boundary (2 batches per epoch)
    resumed = _batches(P.contrastive_dataset(manifest, augment=AUG, global_batch_size=4,
                                             seed=2, start_step=k), 1)[0]
    for key in resumed:
      np.testing.assert_array_equal(resumed[key], fresh[k][key])
  shard = _batches(P.contrastive_dataset(manifest, augment=AUG, global_batch_size=4, seed=2,
                                         start_step=5, input_context=_context(1)), 1)[0]
  np.testing.assert_allclose(shard["view2"], fresh[5]["view2"][2:], atol=1e-6)


def test_start_step_does_not_decode_skipped_images(tmp_path):
  m = _write_images(tmp_path, 8)
  fresh = _batches(P.supervised_dataset(m, augment=AUG, image_size=S, global_batch_size=4,
                                        seed=0), 2)
  # Positions 0-3 are the only ones that reference these files: delete them, resume at 1.
  first_items = [int(i) for i, _ in P.index_stream(8, 8, seed=0).take(4)]
  later_items = [int(i) for i, _ in P.index_stream(8, 8, seed=0).skip(4).take(12)]
  for i in set(first_items) - set(later_items):
    os.remove(m.records[i].image_path)
  resumed = _batches(P.supervised_dataset(m, augment=AUG, image_size=S, global_batch_size=4,
                                          seed=0, start_step=1), 1)[0]
  np.testing.assert_array_equal(resumed["image"], fresh[1]["image"])


def test_supervised_contract_labels_follow_images(manifest):
  ds = P.supervised_dataset(manifest, augment=None, image_size=S, global_batch_size=5,
                            seed=0)
  assert set(ds.element_spec) == {"image", "label", "mask"}
  assert ds.element_spec["image"].shape == (5, S, S, 3)
  # Batches cross epoch boundaries (10 items, batch 5 → exactly 2 per epoch here).
  order = [int(i) for i, _ in P.index_stream(10, 10, seed=0).take(10)]
  expected_labels = manifest.label_matrix()[order]
  got = np.concatenate([b["label"] for b in _batches(ds, 2)])
  np.testing.assert_array_equal(got, expected_labels)
  # Without augmentation the images are the eval preprocessing of the right files.
  eval_b = _batches(P.eval_dataset(manifest, image_size=S, batch_size=10), 1)[0]
  first = _batches(ds, 1)[0]
  np.testing.assert_allclose(first["image"], eval_b["image"][order[:5]], atol=1e-6)


def test_supervised_augmented_is_deterministic_and_shardable(manifest):
  kw = dict(augment=AUG, image_size=S, global_batch_size=4, seed=9)
  one = _batches(P.supervised_dataset(manifest, **kw), 3)
  two = [_batches(P.supervised_dataset(manifest, input_context=_context(k), **kw), 3)
         for k in range(2)]
  for t in range(3):
    both = np.concatenate([two[0][t]["image"], two[1][t]["image"]])
    np.testing.assert_allclose(both, one[t]["image"], atol=1e-6)


def test_eval_dataset_keeps_order_partial_batch_and_strings(manifest):
  batches = _batches(P.eval_dataset(manifest, image_size=S, batch_size=4), 10)
  assert [len(b["id"]) for b in batches] == [4, 4, 2]
  ids = [x.decode() for b in batches for x in b["id"]]
  assert ids == [r.example_id for r in manifest.records]
  patients = [x.decode() for b in batches for x in b["patient"]]
  assert patients == manifest.patients()
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels, manifest.label_matrix())


def test_cache_and_max_image_size(manifest):
  kw = dict(augment=AUG, global_batch_size=4, seed=1)
  plain = _batches(P.contrastive_dataset(manifest, **kw), 2)
  cached = _batches(P.contrastive_dataset(manifest, cache=True, **kw), 2)
  for a, b in zip(plain, cached):
    np.testing.assert_allclose(a["view1"], b["view1"], atol=1e-6)
  small = _batches(P.contrastive_dataset(manifest, max_image_size=12, **kw), 1)[0]
  assert small["view1"].shape == (4, S, S, 3)


def test_errors_name_the_problem(manifest, tmp_path):
  with pytest.raises(DataError, match="manifest.csv"):
    P.contrastive_dataset(manifest, augment=AUG, global_batch_size=16)
  empty = Manifest(records=(), source="empty.csv")
  with pytest.raises(DataError, match="empty.csv"):
    P.contrastive_dataset(empty, augment=AUG, global_batch_size=2)
  with pytest.raises(DataError, match="empty.csv"):
    P.eval_dataset(empty, image_size=S, batch_size=2)
  with pytest.raises(ConfigError, match="global_batch_size=5"):
    P.contrastive_dataset(manifest, augment=AUG, global_batch_size=5,
                          input_context=_context(0))
  with pytest.raises(ConfigError, match="image_size"):
    P.supervised_dataset(manifest, augment=AUG, image_size=S + 1, global_batch_size=2)
  unlabelled = _write_images(tmp_path, 4, k=0)
  with pytest.raises(DataError, match="no labels"):
    P.supervised_dataset(unlabelled, augment=None, image_size=S, global_batch_size=2)


def test_works_under_distribute_datasets_from_function(manifest):
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  dist = strategy.distribute_datasets_from_function(
      lambda ctx: P.contrastive_dataset(manifest, augment=AUG, global_batch_size=4, seed=1,
                                        input_context=ctx))
  batch = next(iter(dist))
  local = strategy.experimental_local_results(batch["view1"])
  assert [x.shape[0] for x in local] == [2, 2]
  single = _batches(P.contrastive_dataset(manifest, augment=AUG, global_batch_size=4,
                                          seed=1), 1)[0]
  np.testing.assert_allclose(np.concatenate([x.numpy() for x in local]), single["view1"],
                             atol=1e-6)


@pytest.fixture(scope="module")
def as_tfrecords(manifest, tmp_path_factory):
  """The module's PNG manifest written as 3 TFRecord shards → its index manifest."""
  prefix = str(tmp_path_factory.mktemp("shards") / "set")
  tfrecords.write_tfrecords(manifest, prefix, num_shards=3, num_workers=1)
  return tfrecords.tfrecords_manifest(prefix)


def _assert_same(a_batches, b_batches):
  for a, b in zip(a_batches, b_batches):
    assert set(a) == set(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("memory_bytes", [P.TFRECORDS_MEMORY_BYTES, 0])  # in memory / ranged
def test_tfrecords_give_the_same_batches_as_png_files(manifest, as_tfrecords, memory_bytes):
  kw = dict(tfrecords_memory_bytes=memory_bytes)
  for micle in (False, True):
    args = dict(augment=AUG, global_batch_size=4, seed=7, micle=micle)
    _assert_same(_batches(P.contrastive_dataset(manifest, **args), 3),
                 _batches(P.contrastive_dataset(as_tfrecords, **args, **kw), 3))
  args = dict(augment=AUG, image_size=S, global_batch_size=4, seed=2, start_step=3,
              input_context=_context(1))
  _assert_same(_batches(P.supervised_dataset(manifest, **args), 2),
               _batches(P.supervised_dataset(as_tfrecords, **args, **kw), 2))
  _assert_same(_batches(P.eval_dataset(manifest, image_size=S, batch_size=4), 3),
               _batches(P.eval_dataset(as_tfrecords, image_size=S, batch_size=4, **kw), 3))
  # A subset (e.g. a label fraction) reads only its own records, whatever their shard.
  keep = [7, 2, 5, 0]
  _assert_same(_batches(P.eval_dataset(manifest.subset(keep), image_size=S, batch_size=4), 1),
               _batches(P.eval_dataset(as_tfrecords.subset(keep, " (subset)"), image_size=S,
                                       batch_size=4, **kw), 1))


def test_storage_not_source_decides_how_images_are_read(manifest, as_tfrecords, tmp_path):
  png = _batches(P.eval_dataset(manifest, image_size=S, batch_size=4), 3)
  # TFRecord storage with a source text that says nothing about TFRecords.
  renamed = dataclasses.replace(as_tfrecords, source="site A, converted last week")
  assert renamed.storage == as_tfrecords.storage and renamed.storage.is_tfrecords
  _assert_same(png, _batches(P.eval_dataset(renamed, image_size=S, batch_size=4), 3))
  # File storage whose source text looks like a TFRecord index: still read as files.
  fake = dataclasses.replace(manifest, source=f"tfrecords:{tmp_path / 'no_such_shards'}")
  assert not fake.storage.is_tfrecords
  _assert_same(png, _batches(P.eval_dataset(fake, image_size=S, batch_size=4), 3))
  # Derived manifests keep the storage (subsets: also validate's skip_bad; label fractions).
  assert as_tfrecords.subset([1, 3], " (two)").storage == as_tfrecords.storage
  fraction = label_fraction.select_fraction(renamed, fraction=0.5, seed=1)
  assert fraction.storage == as_tfrecords.storage and len(fraction) < len(renamed)
  same = label_fraction.select_fraction(manifest, fraction=0.5, seed=1)
  _assert_same(_batches(P.eval_dataset(same, image_size=S, batch_size=8), 1),
               _batches(P.eval_dataset(fraction, image_size=S, batch_size=8), 1))
  with pytest.raises(ValueError, match="tfrecord_prefix must be set exactly"):
    Storage(kind="tfrecords")
  with pytest.raises(ValueError, match="storage kind must be one of"):
    Storage(kind="zip")


def test_tfrecords_index_mismatch_and_unknown_id_are_reported(manifest, tmp_path):
  prefix = str(tmp_path / "one")
  tfrecords.write_tfrecords(manifest.subset([0, 1, 2]), prefix, num_shards=1, num_workers=1)
  with open(tfrecords.index_path(prefix)) as f:
    header, *rows = f.read().splitlines()
  rows[0], rows[1] = rows[1], rows[0]  # index no longer matches the shard's record order
  with open(tfrecords.index_path(prefix), "w") as f:
    f.write("\n".join([header, *rows]) + "\n")
  wrong = tfrecords.tfrecords_manifest(prefix)
  for memory_bytes in (P.TFRECORDS_MEMORY_BYTES, 0):
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not match its index"):
      _batches(P.eval_dataset(wrong, image_size=S, batch_size=3,
                              tfrecords_memory_bytes=memory_bytes), 1)
  unknown = dataclasses.replace(wrong, records=(
      dataclasses.replace(wrong.records[0], example_id="nope"),))
  with pytest.raises(DataError, match="'nope' is not in the TFRecord index"):
    P.eval_dataset(unknown, image_size=S, batch_size=1)
