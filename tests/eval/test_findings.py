"""findings: paired REMEDIS − baseline differences against an independent numpy loop."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from remedis_tf.eval import findings, resampling


def _data(seed=0, n_patients=40, k=3):
  rng = np.random.default_rng(seed)
  per = rng.integers(1, 4, size=n_patients)
  patients = np.repeat([f"p{i}" for i in range(n_patients)], per)
  n = patients.size
  labels = (rng.random((n, k)) < 0.4).astype(np.float64)
  labels[:2] = [[1] * k, [0] * k]
  mask = np.ones_like(labels)
  scores = {}
  for model, signal in (("baseline", 0.5), ("remedis", 1.5)):
    for s in (0, 1, 2):
      scores[(model, 1.0, s)] = labels * signal + rng.normal(size=labels.shape)
  return scores, labels, mask, patients


def _loop_reference(scores, labels, patients, a, b, num, seed, confidence=0.95):
  """The same two-level paired bootstrap written as plain loops over replicates."""
  keys, inverse = np.unique(patients, return_inverse=True)
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, keys.size, size=(num, keys.size))
  seeds = sorted({k[2] for k in scores})
  seed_draws = np.random.default_rng([seed, 1]).integers(0, len(seeds), size=(num, len(seeds)))
  diffs = []
  for r in range(num):
    rows = np.concatenate([np.flatnonzero(inverse == p) for p in draws[r]])
    y = labels[rows]

    def mean_auc(model, fraction, s):
      sc = scores[(model, fraction, s)][rows]
      if any(len(np.unique(y[:, j])) < 2 for j in range(y.shape[1])):
        return np.nan
      return np.mean([roc_auc_score(y[:, j], sc[:, j]) for j in range(y.shape[1])])

    va = np.mean([mean_auc(*a, seeds[i]) for i in seed_draws[r]])
    vb = np.mean([mean_auc(*b, seeds[i]) for i in seed_draws[r]])
    diffs.append(vb - va)
  diffs = np.asarray(diffs)
  diffs = diffs[np.isfinite(diffs)]
  alpha = (1 - confidence) / 2
  point = lambda m: np.mean([np.mean([roc_auc_score(labels[:, j], scores[(m, 1.0, s)][:, j])  # noqa: E731
                                      for j in range(labels.shape[1])]) for s in seeds])
  return point(b[0]) - point(a[0]), np.percentile(diffs, [100 * alpha, 100 * (1 - alpha)])


def test_paired_difference_matches_a_plain_loop():
  scores, labels, mask, patients = _data()
  reps = resampling.replicates(scores, labels, mask, patients, "multilabel", 200, seed=3)
  got = findings.compare("id_site_a_finetune", "mean_auc", reps, ("baseline", 1.0),
                         ("remedis", 1.0))
  estimate, (lo, hi) = _loop_reference(scores, labels, patients, ("baseline", 1.0),
                                       ("remedis", 1.0), 200, 3)
  assert got["estimate"] == pytest.approx(estimate, abs=1e-12)
  assert got["interval"] == pytest.approx([lo, hi], abs=1e-9)
  assert got["verdict"] == "better" and lo > 0
  back = findings.compare("id_x", "mean_auc", reps, ("remedis", 1.0), ("baseline", 1.0))
  assert back["verdict"] == "worse"
  assert back["estimate"] == pytest.approx(-got["estimate"])


def test_verdict_rule_and_names():
  assert findings.verdict(0.01, 0.2) == "better"
  assert findings.verdict(-0.2, -0.01) == "worse"
  assert findings.verdict(-0.1, 0.1) == "no difference"
  assert findings.verdict(0.0, 0.1) == "no difference"
  assert findings.verdict(None, 0.1) == "no difference"
  assert findings.verdict(float("nan"), 0.1) == "no difference"
  with pytest.raises(ValueError, match="must start"):
    findings.finding("site_a", "mean_auc", 0.1, 0.0, 0.2)
  f = findings.from_interval("frozen_site_a_knn", "mean_auc",
                             {"value": 0.2, "lower": 0.1, "upper": 0.3})
  assert (f["estimate"], f["interval"], f["verdict"]) == (0.2, [0.1, 0.3], "better")


def test_sweep_findings_and_learning_curve():
  scores, labels, mask, patients = _data(seed=1)
  rng = np.random.default_rng(5)
  for model in ("baseline", "remedis"):
    for s in (0, 1, 2):
      scores[(model, 0.1, s)] = rng.normal(size=labels.shape)  # no signal at 10 %
  reps = resampling.replicates(scores, labels, mask, patients, "multilabel", 100, seed=0)
  found = findings.sweep_findings(reps, "mean_auc", "site_b", "finetune")
  names = [f["name"] for f in found]
  assert names == ["efficiency_site_b_finetune_f0.1", "efficiency_site_b_finetune_f1",
                   "efficiency_site_b_finetune_headline"]
  head = found[-1]
  assert head["arms"] == {"a": "baseline@1", "b": "remedis@0.1"}
  assert head["estimate"] == pytest.approx(reps.point_mean("remedis", 0.1)
                                           - reps.point_mean("baseline", 1.0))
  curve = findings.learning_curve(reps, "baseline", 0.1)
  assert curve["verdict"] == "better" and curve["interval"][0] > 0
  assert curve["rise"] == pytest.approx(reps.point_mean("baseline", 1.0)
                                        - reps.point_mean("baseline", 0.1))
  doc = findings.document({"selection": "validation"}, found, curve)
  assert doc["baseline_learning_curve"]["from_fraction"] == 0.1
  for f in doc["findings"]:
    lo, hi = f["interval"]
    assert f["verdict"] == findings.verdict(lo, hi)
