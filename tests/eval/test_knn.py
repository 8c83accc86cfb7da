"""kNN monitor against a direct per-query computation."""

import numpy as np
import pytest
from sklearn import metrics as skm

from remedis_tf.errors import DataError
from remedis_tf.eval import knn

# Tolerances here (docs/testing.md):
# derived: kNN scores are exact vote fractions / float64 distances computed two ways
# (summation order only, ~1e-15), so rtol=1e-9, atol=1e-12 and the defaults hold.


def _direct(x, y, m, patients, k, t):
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  out = np.zeros_like(y, dtype=np.float64)
  for i in range(len(x)):
    cands = [j for j in range(len(x)) if patients[j] != patients[i]]
    sims = np.array([x[i] @ x[j] for j in cands])
    order = np.argsort(-sims, kind="stable")[:k]
    w = np.exp((sims[order] - 1.0) / t)
    nbrs = np.array(cands)[order]
    num = (w[:, None] * m[nbrs] * y[nbrs]).sum(0)
    den = (w[:, None] * m[nbrs]).sum(0)
    out[i] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
  return out


def test_matches_direct_computation_with_masks_and_patients():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 8))
  y = (rng.random((40, 3)) < 0.4).astype(float)
  m = (rng.random((40, 3)) < 0.8).astype(float)
  patients = np.repeat(np.arange(20), 2).astype(str)
  got = knn.knn_scores(x, y, m, patients, k=5, temperature=0.1, chunk=7)
  want = _direct(x, y, m, patients, 5, 0.1)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_own_patient_never_used():
  # Two patients with identical embeddings: each query must score from the other patient.
  x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  y = np.array([[1.0], [1.0], [0.0], [0.0]])
  scores = knn.knn_scores(x, y, None, np.array(["a", "a", "b", "b"]), k=1)
  np.testing.assert_allclose(scores[:, 0], [0.0, 0.0, 1.0, 1.0])


def test_separable_embeddings_score_high_and_random_ones_near_chance():
  rng = np.random.default_rng(1)
  y = (rng.random((200, 1)) < 0.5).astype(float)
  good = np.concatenate([y * 3 + rng.normal(size=(200, 1)) * 0.3, rng.normal(size=(200, 4))], 1)
  patients = np.arange(200).astype(str)
  assert knn.knn_monitor_metrics("binary", good, y, None, patients)["knn_mean_auc"] > 0.95
  noise = rng.normal(size=(200, 5))
  assert abs(knn.knn_monitor_metrics("binary", noise, y, None, patients)["knn_mean_auc"]
             - 0.5) < 0.15
  onehot = np.eye(3)[rng.integers(0, 3, 200)]
  clustered = onehot * 5 + rng.normal(size=(200, 3)) * 0.2
  acc = knn.knn_monitor_metrics("multiclass", clustered, onehot, None, patients)
  assert acc["knn_top1_accuracy"] > 0.95


def test_multiclass_knn_accuracy_breaks_vote_ties_like_sklearn():
  """Regression: np.argmax gave tied votes to the lowest class index (favouring class 0);
  the monitor now uses the one top-k rule (sklearn's: highest index first)."""
  rng = np.random.default_rng(2)
  n, c = 60, 3
  ids = rng.integers(0, c, n)
  onehot = np.eye(c)[ids]
  x = np.ones((n, 4))  # identical embeddings: equal weights, votes tie a lot
  patients = np.arange(n).astype(str)
  scores = knn.knn_scores(x, onehot, None, patients, k=2)
  top = scores.max(1, keepdims=True)
  assert ((scores == top).sum(1) > 1).sum() > 10  # the data does exercise ties
  got = knn.knn_monitor_metrics("multiclass", x, onehot, None, patients, k=2)
  assert got["knn_top1_accuracy"] == pytest.approx(
      skm.top_k_accuracy_score(ids, scores, k=1, labels=np.arange(c)))


def test_too_few_examples():
  with pytest.raises(DataError, match="at least 2"):
    knn.knn_scores(np.ones((1, 2)), np.ones((1, 1)), None, np.array(["a"]))


def test_bank_scores_match_direct_computation():
  rng = np.random.default_rng(1)
  bank = rng.normal(size=(30, 6))
  queries = rng.normal(size=(11, 6))
  y = (rng.random((30, 2)) < 0.5).astype(float)
  m = (rng.random((30, 2)) < 0.7).astype(float)
  got = knn.knn_bank_scores(queries, bank, y, m, k=4, temperature=0.2, chunk=3)
  qb = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  qq = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  want = np.zeros((11, 2))
  for i in range(11):
    sims = qb @ qq[i]
    order = np.argsort(-sims, kind="stable")[:4]
    w = np.exp((sims[order] - 1.0) / 0.2)
    num = (w[:, None] * m[order] * y[order]).sum(0)
    den = (w[:, None] * m[order]).sum(0)
    want[i] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_bank_scores_reject_mismatched_dims():
  with pytest.raises(DataError, match="queries"):
    knn.knn_bank_scores(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros((4, 1)), None)
