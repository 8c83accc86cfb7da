"""Label-fraction subsets: sizes, nesting, stratification, patient integrity, seeds, errors."""

import math

import numpy as np
import pytest

from remedis_tf.data import label_fraction
from remedis_tf.data.label_fraction import NO_POSITIVE, select_fraction
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.errors import ConfigError, DataError


def patient_strata(manifest):
  """Patient key → stratum name (a label name, or NO_POSITIVE), from the module's own rule."""
  keys, _, per_patient = label_fraction._patient_positives(manifest)  # pylint: disable=protected-access
  names = list(manifest.label_names) + [NO_POSITIVE]
  return {k: names[s] for k, s in zip(keys, label_fraction._strata(per_patient))}  # pylint: disable=protected-access


FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _multiclass_manifest(num_patients=800, seed=0, probs=(0.5, 0.25, 0.15, 0.1)):
  rng = np.random.default_rng(seed)
  k = len(probs)
  records = []
  for p in range(num_patients):
    cls = rng.choice(k, p=probs)
    for v in range(rng.integers(1, 4)):  # 1-3 images per patient, same class
      onehot = tuple(float(c == cls) for c in range(k))
      records.append(Record(f"/img/p{p}_{v}.png", f"p{p}_{v}", onehot, (1.0,) * k,
                            patient_id=f"p{p:04d}"))
  order = rng.permutation(len(records))  # file order should not matter
  return Manifest(tuple(records[i] for i in order), tuple(f"c{i}" for i in range(k)),
                  "multiclass", "mc.csv")


def _multilabel_manifest(num_patients=600, seed=1):
  rng = np.random.default_rng(seed)
  prev = np.array([0.3, 0.2, 0.1, 0.05, 0.4])
  records = []
  for p in range(num_patients):
    for v in range(rng.integers(1, 3)):
      y = (rng.random(5) < prev).astype(float)
      m = (rng.random(5) < 0.9).astype(float)
      records.append(Record(f"/img/q{p}_{v}.png", f"q{p}_{v}", tuple(y), tuple(m),
                            patient_id=f"q{p}"))
  return Manifest(tuple(records), ("atel", "card", "cons", "edema", "effusion"), "multilabel",
                  "ml.csv")


def _patients(m):
  return {r.patient_id for r in m.records}


def _ids(m):
  return {r.example_id for r in m.records}


@pytest.mark.parametrize("make", [_multiclass_manifest, _multilabel_manifest])
def test_sizes_and_nesting(make):
  full = make()
  n_patients = len(_patients(full))
  num_strata = len(set(patient_strata(full).values()))
  prev_ids = set()
  for f in FRACTIONS:
    sub = select_fraction(full, fraction=f, seed=3)
    got = len(_patients(sub))
    assert f * n_patients <= got <= f * n_patients + num_strata
    assert _ids(sub) >= prev_ids  # nested
    prev_ids = _ids(sub)
    if f >= 0.1:
      assert abs(len(sub) / len(full) - f) < 0.05 * f + 0.01
  assert prev_ids == _ids(full)  # 100 % is everything
  # Records keep their manifest order.
  sub = select_fraction(full, fraction=0.2, seed=3)
  pos = {r.example_id: i for i, r in enumerate(full.records)}
  assert [pos[r.example_id] for r in sub.records] == sorted(pos[r.example_id] for r in sub.records)
  assert sub.label_names == full.label_names and sub.task == full.task
  assert "fraction=0.2" in sub.source


def test_nesting_for_per_class():
  full = _multiclass_manifest()
  small = select_fraction(full, per_class=5, seed=2)
  large = select_fraction(full, per_class=20, seed=2)
  assert _ids(small) <= _ids(large)
  strata = patient_strata(full)
  counts = {}
  for p in _patients(large):
    counts[strata[p]] = counts.get(strata[p], 0) + 1
  assert counts == {"c0": 20, "c1": 20, "c2": 20, "c3": 20}


def test_no_patient_is_split():
  full = _multilabel_manifest()
  per_patient = {}
  for r in full.records:
    per_patient.setdefault(r.patient_id, set()).add(r.example_id)
  for f in (0.02, 0.1, 0.5):
    sub = select_fraction(full, fraction=f, seed=0)
    for p in _patients(sub):
      assert per_patient[p] <= _ids(sub)


def test_stratification_preserves_class_proportions():
  full = _multiclass_manifest(num_patients=1000)
  strata = patient_strata(full)
  def proportions(patients):
    names = [strata[p] for p in patients]
    return np.array([names.count(f"c{i}") for i in range(4)]) / len(names)
  want = proportions(_patients(full))
  for f in (0.05, 0.1, 0.2):
    got = proportions(_patients(select_fraction(full, fraction=f, seed=5)))
    # ceil per stratum shifts each proportion by at most ~#strata / subset size.
    assert np.abs(got - want).max() <= 4 / (f * 1000) + 1e-9
  # Without stratification a 5 % draw's proportions drift further from the full set's.
  unstrat = [np.abs(proportions(_patients(select_fraction(full, fraction=0.05, seed=s,
                                                          stratify=False))) - want).max()
             for s in range(10)]
  strat = [np.abs(proportions(_patients(select_fraction(full, fraction=0.05, seed=s))) - want).max()
           for s in range(10)]
  assert np.mean(strat) < np.mean(unstrat)


def test_multilabel_strata_are_rarest_positive_label_and_all_represented():
  full = _multilabel_manifest()
  strata = patient_strata(full)
  # Check the rule on every patient against a direct computation.
  positives = {}
  for r in full.records:
    s = positives.setdefault(r.patient_id, set())
    s.update(n for n, y, m in zip(full.label_names, r.labels, r.mask) if y == 1 and m > 0)
  prevalence = {n: sum(n in s for s in positives.values()) for n in full.label_names}
  for p, s in positives.items():
    expected = (min(s, key=lambda n: (prevalence[n], full.label_names.index(n)))
                if s else NO_POSITIVE)
    assert strata[p] == expected
  # Even 1 % keeps at least one patient of every stratum, so every label has a positive.
  sub = select_fraction(full, fraction=0.01, seed=0)
  assert set(patient_strata(full).values()) <= {strata[p] for p in _patients(sub)}
  assert (sub.label_matrix() * sub.mask_matrix()).sum(0).min() >= 1


def test_seed_stability():
  full = _multiclass_manifest()
  a = select_fraction(full, fraction=0.1, seed=7)
  b = select_fraction(full, fraction=0.1, seed=7)
  c = select_fraction(full, fraction=0.1, seed=8)
  assert a == b
  assert _ids(a) != _ids(c)
  # Shuffling the manifest's records does not change which patients a seed picks.
  shuffled = Manifest(tuple(reversed(full.records)), full.label_names, full.task, full.source)
  assert _patients(select_fraction(shuffled, fraction=0.1, seed=7)) == _patients(a)


def test_records_without_patient_are_their_own_patient():
  records = tuple(Record(f"/i{i}.png", f"i{i}", (float(i % 2),), (1.0,)) for i in range(40))
  full = Manifest(records, ("pos",), "binary", "b.csv")
  sub = select_fraction(full, fraction=0.25, seed=0)
  assert len(sub) == 10  # 5 of 20 positives + 5 of 20 negatives


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_bad_fraction_names_value(bad):
  with pytest.raises(ConfigError, match="fraction must be in"):
    select_fraction(_multiclass_manifest(50), fraction=bad)


def test_request_errors():
  full = _multiclass_manifest(50)
  with pytest.raises(ConfigError, match="exactly one"):
    select_fraction(full)
  with pytest.raises(ConfigError, match="exactly one"):
    select_fraction(full, fraction=0.1, per_class=3)
  with pytest.raises(ConfigError, match="per_class"):
    select_fraction(full, per_class=0)
  unl = Manifest(tuple(Record(f"/u{i}.png", f"u{i}") for i in range(5)), (), "unlabelled",
                 "u.csv")
  with pytest.raises(DataError, match="u.csv"):
    select_fraction(unl, fraction=0.5)


def test_fraction_that_loses_a_class_names_it():
  # Without stratification a 1 % subset of 100 patients is one patient: it cannot hold
  # both classes, so one of them is reported by name.
  recs = tuple(Record(f"/r{i}.png", f"r{i}", (float(i < 50), float(i >= 50)), (1.0, 1.0),
                      patient_id=f"p{i}") for i in range(100))
  full = Manifest(recs, ("benign", "malignant"), "multiclass", "two.csv")
  with pytest.raises(ConfigError, match=r"leaves class '(benign|malignant)'"):
    select_fraction(full, fraction=0.01, stratify=False)
  assert len(select_fraction(full, fraction=0.01)) == 2  # stratified: one of each
  assert math.isclose(len(select_fraction(full, fraction=0.3)), 30)
