"""Bootstrap confidence intervals: vectorised vs index resampling, patients, seeds."""

import time

import numpy as np
import pytest
from sklearn import metrics as skm

from remedis_tf.eval import bootstrap as B
from remedis_tf.eval import metrics as M
from tests.eval.score_data import binary_data

# Tolerances here (docs/testing.md):
# derived. float64 numpy: the fast and slow bootstrap evaluate the same resamples
# (summation order only, <= n*2^-53 ~ 1e-13), hence abs=1e-12; the estimate is sklearn's exact
# AUC (approx default).


def test_bootstrap_vectorised_equals_index_resampling():
  rng = np.random.default_rng(9)
  y, s = binary_data(rng, 120, ties=True)
  groups = rng.integers(0, 40, size=120)
  fast = B.bootstrap_ci(M.roc_auc, y, s, groups=groups, num_samples=200, seed=3)
  slow = B.bootstrap_ci(lambda a, b: M.roc_auc(a, b), y, s, groups=groups, num_samples=200,
                        seed=3)
  assert fast.lower == pytest.approx(slow.lower, abs=1e-12)
  assert fast.upper == pytest.approx(slow.upper, abs=1e-12)
  assert fast.std == pytest.approx(slow.std, abs=1e-12)
  assert fast.unit == "patient"


def test_bootstrap_contains_estimate_and_shrinks_with_more_data():
  rng = np.random.default_rng(10)
  widths = []
  for n in (100, 1600):
    y, s = binary_data(rng, n)
    res = B.bootstrap_ci(M.roc_auc, y, s, num_samples=400, seed=0)
    assert res.estimate == pytest.approx(skm.roc_auc_score(y, s))
    assert res.lower <= res.estimate <= res.upper
    widths.append(res.upper - res.lower)
  # Width scales like 1/sqrt(n): 16x data → about 4x narrower.
  assert widths[1] < widths[0] / 2.5


def test_bootstrap_seeded_and_confidence_monotone():
  rng = np.random.default_rng(11)
  y, s = binary_data(rng, 200)
  a = B.bootstrap_ci(M.roc_auc, y, s, num_samples=300, seed=1)
  b = B.bootstrap_ci(M.roc_auc, y, s, num_samples=300, seed=1)
  c = B.bootstrap_ci(M.roc_auc, y, s, num_samples=300, seed=2)
  assert (a.lower, a.upper) == (b.lower, b.upper)
  assert (a.lower, a.upper) != (c.lower, c.upper)
  narrow = B.bootstrap_ci(M.roc_auc, y, s, num_samples=300, seed=1, confidence=0.5)
  assert a.lower < narrow.lower and narrow.upper < a.upper


def test_patient_resampling_differs_from_example_resampling():
  # Each patient contributes 8 identical copies of one example. Resampling patients is
  # resampling the 50 distinct examples; resampling images treats 400 copies as independent
  # and is about sqrt(8) times too narrow.
  rng = np.random.default_rng(12)
  y0, s0 = binary_data(rng, 50)
  y, s = np.repeat(y0, 8), np.repeat(s0, 8)
  patients = np.repeat(np.arange(50), 8)
  by_patient = B.bootstrap_ci(M.roc_auc, y, s, groups=patients, num_samples=500, seed=0)
  by_example = B.bootstrap_ci(M.roc_auc, y, s, num_samples=500, seed=0)
  base = B.bootstrap_ci(M.roc_auc, y0, s0, num_samples=500, seed=0)
  # Patient resampling of the copies draws exactly the same resamples as the 50 originals.
  assert by_patient.std == pytest.approx(base.std, abs=1e-12)
  assert by_patient.lower == pytest.approx(base.lower, abs=1e-12)
  assert by_example.std < by_patient.std / 2


def test_bootstrap_counts_undefined_resamples():
  y = np.zeros(30)
  y[0] = 1  # one positive: many resamples miss it
  s = np.linspace(0, 1, 30)
  res = B.bootstrap_ci(M.roc_auc, y, s, num_samples=200, seed=0)
  # P(positive not drawn) = (29/30)^30 ≈ 0.36.
  assert 40 < res.num_undefined < 110
  assert np.isfinite(res.lower) and np.isfinite(res.upper)


def test_bootstrap_speed_5k_by_5_classes():
  rng = np.random.default_rng(13)
  y = (rng.random((5000, 5)) < 0.3).astype(float)
  s = rng.normal(size=(5000, 5)) + y
  patients = rng.integers(0, 2000, size=5000)
  t0 = time.perf_counter()
  res = B.bootstrap_ci(M.per_class_auc, y, s, groups=patients, num_samples=1000, seed=0)
  assert time.perf_counter() - t0 < 8.0
  assert res.lower.shape == (5,)
  assert np.all(res.lower <= res.estimate) and np.all(res.estimate <= res.upper)
