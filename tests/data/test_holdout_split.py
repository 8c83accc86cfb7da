"""holdout_split: a patient-level validation split held out once; fractions of the rest."""

import numpy as np

from remedis_tf.data.label_fraction import holdout_split, select_fraction
from remedis_tf.data.manifest import Manifest, Record


def _manifest(num_patients=300, seed=0):
  rng = np.random.default_rng(seed)
  records = []
  for p in range(num_patients):
    for v in range(rng.integers(1, 4)):
      y = tuple((rng.random(3) < (0.3, 0.2, 0.1)).astype(float))
      records.append(Record(f"/img/p{p}_{v}.png", f"p{p}_{v}", y, (1.0,) * 3,
                            patient_id=f"p{p}"))
  return Manifest(tuple(records), ("a", "b", "c"), "multilabel", "m.csv")


def test_holdout_is_patient_disjoint_complete_and_fixed():
  m = _manifest()
  rest, held = holdout_split(m, 0.2, seed=0)
  assert len(rest) + len(held) == len(m)
  assert not set(rest.patients()) & set(held.patients())
  assert 0.15 < len(set(held.patients())) / len(set(m.patients())) < 0.25
  again_rest, again_held = holdout_split(m, 0.2, seed=0)
  assert again_held.records == held.records and again_rest.records == rest.records
  # Original order kept in both parts.
  order = {r.example_id: i for i, r in enumerate(m.records)}
  for part in (rest, held):
    idx = [order[r.example_id] for r in part.records]
    assert idx == sorted(idx)
  # Fractions of the rest are nested and never touch the held-out patients.
  small = select_fraction(rest, 0.1, seed=1)
  large = select_fraction(rest, 0.5, seed=1)
  assert set(small.patients()) <= set(large.patients())
  assert not set(large.patients()) & set(held.patients())
