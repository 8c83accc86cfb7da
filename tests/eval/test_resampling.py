"""Seed × test-patient bootstrap: against a direct loop over replicates (sklearn AUCs on
explicitly resampled rows), and the headline interval against the rule re-run by hand."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from remedis_tf.errors import DataError
from remedis_tf.eval import data_efficiency as de
from remedis_tf.eval import resampling

# Tolerances here (docs/testing.md):
# derived. float64 numpy: the same resamples, percentiles and means computed two ways
# (summation order only, <= n*2^-53 ~ 1e-13), hence abs=1e-12 / approx defaults.


def _test_set(rng, n_patients=15, k=2):
  patients = np.repeat([f"p{i}" for i in range(n_patients)], 2)
  labels = (rng.random((2 * n_patients, k)) < 0.5).astype(float)
  labels[0], labels[2] = 1.0, 0.0  # both classes present in the full set
  return labels, np.ones_like(labels), patients


def _scores(rng, labels, strength):
  return labels * strength + rng.normal(size=labels.shape)


def test_combined_rows_match_direct_loop():
  rng = np.random.default_rng(0)
  labels, mask, patients = _test_set(rng)
  scores = {(m, f, s): _scores(rng, labels, st * f)
            for m, st in (("baseline", 1.0), ("remedis", 2.0)) for f in (0.5, 1.0)
            for s in (0, 1, 2)}
  R = 60
  reps = resampling.replicates(scores, labels, mask, patients, "multilabel", R, seed=3)
  rows = {(r.model, r.fraction): r for r in resampling.combined_rows(reps)}
  # Direct: the same patient draws and seed draws, rows materialised explicitly.
  uniq, group = np.unique(patients, return_inverse=True)
  prng = np.random.default_rng(3)
  draws = prng.integers(0, len(uniq), size=(R, len(uniq)))
  srng = np.random.default_rng([3, 1])
  seed_draws = srng.integers(0, 3, size=(R, 3))
  for (model, fraction), row in rows.items():
    vals = []
    for r in range(R):
      idx = np.concatenate([np.flatnonzero(group == g) for g in draws[r]])
      per_seed = []
      for s in seed_draws[r]:
        sc = scores[(model, fraction, int(s))]
        try:
          per_seed.append(np.mean([roc_auc_score(labels[idx, j], sc[idx, j])
                                   for j in range(2)]))
        except ValueError:
          per_seed.append(np.nan)
      vals.append(np.mean(per_seed))
    vals = np.asarray(vals)
    ok = np.isfinite(vals)
    assert row.num_undefined == int((~ok).sum())
    lo, hi = np.percentile(vals[ok], [2.5, 97.5])
    assert row.lower == pytest.approx(lo, abs=1e-12)
    assert row.upper == pytest.approx(hi, abs=1e-12)
    full = [np.mean([roc_auc_score(labels[:, j], scores[(model, fraction, s)][:, j])
                     for j in range(2)]) for s in (0, 1, 2)]
    assert row.mean == pytest.approx(np.mean(full), abs=1e-12)
    assert [row.per_seed[s] for s in (0, 1, 2)] == pytest.approx(full, abs=1e-12)


def test_seed_variation_widens_the_interval():
  # Identical scores for every seed: seed resampling adds nothing. Seeds that differ
  # by a lot: the interval must widen.
  rng = np.random.default_rng(1)
  labels, mask, patients = _test_set(rng, 40)
  base = _scores(rng, labels, 1.5)
  same = {("m", 1.0, s): base for s in range(3)}
  noisy = {("m", 1.0, s): base + 3.0 * rng.normal(size=base.shape) * (s == 2)
           for s in range(3)}
  w_same = resampling.combined_rows(resampling.replicates(same, labels, mask, patients,
                                                          "multilabel", 300))[0]
  w_noisy = resampling.combined_rows(resampling.replicates(noisy, labels, mask, patients,
                                                           "multilabel", 300))[0]
  assert len(set(w_same.per_seed.values())) == 1
  assert (w_noisy.upper - w_noisy.lower) > 1.2 * (w_same.upper - w_same.lower)


def test_headline_interval_reruns_the_rule_per_replicate():
  rng = np.random.default_rng(2)
  labels, mask, patients = _test_set(rng, 30, k=1)
  fractions = (0.1, 0.3, 1.0)
  scores = {}
  for s in range(3):
    for f in fractions:
      scores[("baseline", f, s)] = _scores(rng, labels, 1.0 + f)
      scores[("remedis", f, s)] = _scores(rng, labels, 1.0 + 3 * f)
  R = 80
  reps = resampling.replicates(scores, labels, mask, patients, "binary", R, seed=5)
  got = resampling.headline_interval(reps)
  # By hand: replicate means → AggregateRows → headline_fraction; inf when not reached.
  found = []
  for r in range(R):
    table = [de.AggregateRow(m, f, float(reps.replicate_means(m, f)[r]), 0, 0, 0, 3)
             for m in ("baseline", "remedis") for f in fractions]
    if not all(math.isfinite(t.mean) for t in table):
      continue
    h = de.headline_fraction(table)
    found.append(h.interpolated_fraction if h.reached else math.inf)
  found = np.sort(found)
  assert got["lower"] == pytest.approx(found[int(math.floor(0.025 * (len(found) - 1)))])
  want_hi = found[int(math.ceil(0.975 * (len(found) - 1)))]
  assert (got["upper"] is None) == math.isinf(want_hi)
  if got["upper"] is not None:
    assert got["upper"] == pytest.approx(want_hi)
  assert got["num_not_reached"] == int(np.isinf(found).sum())
  point = de.headline_fraction([de.AggregateRow(m, f, reps.point_mean(m, f), 0, 0, 0, 3)
                                for m in ("baseline", "remedis") for f in fractions])
  assert got["point"]["interpolated_fraction"] == point.interpolated_fraction
  text = resampling.format_headline(got)
  assert point.summary in text and "interval" in text


def test_mismatched_seeds_and_shapes_are_refused():
  labels = np.array([[1.0], [0.0]])
  mask = np.ones_like(labels)
  with pytest.raises(DataError, match="seeds"):
    resampling.replicates({("a", 1.0, 0): labels, ("b", 1.0, 1): labels}, labels, mask,
                          ["x", "y"], "binary", 5)
  with pytest.raises(DataError, match="shape"):
    resampling.replicates({("a", 1.0, 0): np.zeros((2, 2))}, labels, mask, ["x", "y"],
                          "binary", 5)
