"""MICLe pairing: case table, pair choice and the case-level contrastive stream."""

import os
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from remedis_tf.data import augment as A
from remedis_tf.data import micle
from remedis_tf.data import pipeline as P
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.errors import DataError
from remedis_tf.runs import stages
from remedis_tf.train import finetune_plan

# Case sizes: multi-image and single-image cases mixed; 7 cases, 14 images.
CASE_SIZES = {"a": 3, "b": 2, "c": 1, "d": 1, "e": 4, "f": 1, "g": 2}
S = 8
# Identity augmentation: whole-image crop, nothing random, so a view reveals its image.
IDENTITY = A.AugmentConfig(image_size=S, crop_area_min=1.0, crop_aspect_min=1.0,
                           crop_aspect_max=1.0, crop_min_object_covered=0.0,
                           flip_lr_prob=0.0, color_prob=0.0, grayscale_prob=0.0,
                           blur_prob=0.0)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
  """Constant-colour images whose grey level (10·i + 5) identifies record i."""
  root = tmp_path_factory.mktemp("micle")
  records = []
  # Interleave cases so a case's images are not contiguous in the manifest.
  order = [(p, j) for j in range(4) for p in CASE_SIZES if j < CASE_SIZES[p]]
  for i, (patient, j) in enumerate(order):
    path = os.path.join(str(root), f"{patient}{j}.png")
    Image.fromarray(np.full((12, 10), 10 * i + 5, np.uint8)).save(path)
    records.append(Record(image_path=path, example_id=f"{patient}{j}", labels=(float(i),),
                          mask=(1.0,), patient_id=patient))
  return Manifest(records=tuple(records), label_names=("i",), task="multiclass",
                  source="micle.csv")


def _record_of(view):
  level = view.mean(axis=(-3, -2, -1)) * 255.0
  return np.round((level - 5) / 10).astype(int)


def test_case_table_groups_records_by_patient(manifest):
  table, counts = micle.case_table(manifest)
  groups = manifest.by_patient()
  assert table.shape == (len(CASE_SIZES), max(CASE_SIZES.values()))
  assert table.dtype == np.int32 and counts.dtype == np.int32
  for row, count, (patient, members) in zip(table, counts, groups.items()):
    assert count == CASE_SIZES[patient] == len(members)
    assert list(row[:count]) == members and np.all(row[count:] == micle.PAD)


def test_records_without_patient_are_their_own_case():
  records = tuple(Record(image_path=f"x{i}.png", example_id=f"x{i}") for i in range(3))
  table, counts = micle.case_table(Manifest(records=records))
  assert counts.tolist() == [1, 1, 1] and table[:, 0].tolist() == [0, 1, 2]
  with pytest.raises(DataError, match="empty"):
    micle.case_table(Manifest(records=(), source="none.csv"))


def test_choose_pair_distinct_and_uniform():
  pairs = Counter()
  for s in range(600):
    i1, i2 = micle.choose_pair(tf.constant(3), tf.constant([s, 1], tf.int64))
    i1, i2 = int(i1), int(i2)
    assert 0 <= i1 < 3 and 0 <= i2 < 3 and i1 != i2
    pairs[(i1, i2)] += 1
  assert len(pairs) == 6 and min(pairs.values()) > 60  # 100 expected each
  i1, i2 = micle.choose_pair(tf.constant(1), tf.constant([4, 2], tf.int64))
  assert int(i1) == int(i2) == 0


def test_micle_stream_pairs_images_of_one_case(manifest):
  patients = np.array(manifest.patients())
  counts = {p: n for p, n in CASE_SIZES.items()}
  ds = P.contrastive_dataset(manifest, augment=IDENTITY, global_batch_size=3, seed=0,
                             micle=True)
  seen_pairs = Counter()
  for batch in ds.take(12):  # 6 epochs of 2 batches (7 cases → 6 used per epoch)
    r1, r2 = _record_of(batch["view1"].numpy()), _record_of(batch["view2"].numpy())
    cases = patients[r1]
    assert len(set(cases)) == len(cases), "a case appeared twice in one batch"
    np.testing.assert_array_equal(patients[r2], cases)
    for a, b, case in zip(r1, r2, cases):
      if counts[case] >= 2:
        assert a != b
        seen_pairs[case] += 1
      else:
        assert a == b
    # The probe label is view 1's record.
    np.testing.assert_array_equal(batch["label"].numpy()[:, 0], r1)
  assert set(seen_pairs) == {p for p, n in CASE_SIZES.items() if n >= 2}


def test_an_epoch_is_the_cases_with_micle_and_the_images_without(manifest):
  """Regression: epochs → steps counted images even though the MICLe stream runs over
  cases (14 images but 7 cases here: twice the steps per epoch)."""
  assert stages.contrastive_epoch_size(manifest, micle=True) == (7, "cases")
  assert stages.contrastive_epoch_size(manifest, micle=False) == (14, "images")
  # One epoch's steps at batch 7 (= 1 step) show every case exactly once.
  steps = finetune_plan.steps_for_epochs(1, 7, 7)
  ds = P.contrastive_dataset(manifest, augment=IDENTITY, global_batch_size=7, seed=0,
                             micle=True)
  patients = np.array(manifest.patients())
  (batch,) = list(ds.take(steps))
  assert sorted(patients[_record_of(batch["view1"].numpy())]) == sorted(CASE_SIZES)


def test_micle_needs_enough_cases(manifest):
  with pytest.raises(DataError, match="cases"):
    P.contrastive_dataset(manifest, augment=IDENTITY, global_batch_size=8, micle=True)


def test_plain_simclr_views_come_from_one_image(manifest):
  ds = P.contrastive_dataset(manifest, augment=IDENTITY, global_batch_size=7, seed=0)
  for batch in ds.take(4):
    r1, r2 = _record_of(batch["view1"].numpy()), _record_of(batch["view2"].numpy())
    np.testing.assert_array_equal(r1, r2)
    assert len(set(r1)) == len(r1)
