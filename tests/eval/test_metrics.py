"""Per-class metrics against scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as skm

from remedis_tf.errors import DataError
from remedis_tf.eval import metrics as M
from tests.eval.score_data import binary_data

# Tolerances here (docs/testing.md):
# derived. Ours and sklearn compute the same exact rational numbers (AUC with ties averaged,
# ROC points, top-k accuracy) in float64 and differ only by summation order: <= n*2^-53 ~ 1e-13
# for n <= 1000, so abs=1e-12 and pytest.approx's default (rel 1e-6) / assert_allclose's
# default (rtol 1e-7) hold with a wide margin on any CPU. No TensorFlow is involved.


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn(ties, seed):
  rng = np.random.default_rng(seed)
  y, s = binary_data(rng, 300, ties)
  assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
  w = rng.integers(0, 4, size=300).astype(float)
  assert M.roc_auc(y, s, sample_weight=w) == pytest.approx(
      skm.roc_auc_score(y, s, sample_weight=w), abs=1e-12)


def test_roc_auc_all_tied_is_half_and_single_class_is_nan():
  assert M.roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
  assert np.isnan(M.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
  assert np.isnan(M.roc_auc([0, 0], [0.1, 0.2]))


def test_roc_auc_batched_weights_equal_loop():
  rng = np.random.default_rng(3)
  y, s = binary_data(rng, 200, ties=True)
  w = rng.integers(0, 3, size=(7, 200)).astype(float)
  batched = M.roc_auc(y, s, sample_weight=w)
  assert batched.shape == (7,)
  for r in range(7):
    assert batched[r] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w[r]), abs=1e-12)


def test_roc_auc_rejects_bad_labels_and_scores():
  with pytest.raises(DataError, match="0/1"):
    M.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
  with pytest.raises(DataError, match="finite"):
    M.roc_auc([0, 1, 1], [0.1, np.nan, 0.3])


@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_matches_sklearn(ties):
  rng = np.random.default_rng(4)
  y, s = binary_data(rng, 150, ties)
  fpr, tpr, thr = M.roc_curve(y, s)
  sf, st, sthr = skm.roc_curve(y, s, drop_intermediate=False)
  np.testing.assert_allclose(fpr, sf)
  np.testing.assert_allclose(tpr, st)
  np.testing.assert_allclose(thr[1:], sthr[1:])
  assert np.isinf(thr[0])
  # Dropping collinear points keeps the area.
  df, dt, _ = M.roc_curve(y, s, drop_intermediate=True)
  assert len(df) < len(fpr)
  assert np.trapezoid(dt, df) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_per_class_auc_with_mask_matches_sklearn_on_unmasked_entries():
  rng = np.random.default_rng(5)
  n, k = 400, 4
  y = (rng.random((n, k)) < 0.4).astype(float)
  s = rng.normal(size=(n, k)) + y
  s[:, 1] = np.round(s[:, 1])
  mask = (rng.random((n, k)) < 0.7).astype(float)
  y_noisy = np.where(mask > 0, y, -1.0)  # masked labels may hold anything (e.g. uncertain)
  got = M.per_class_auc(y_noisy, s, mask)
  for j in range(k):
    keep = mask[:, j] > 0
    assert got[j] == pytest.approx(skm.roc_auc_score(y[keep, j], s[keep, j]), abs=1e-12)
  # A class with no unmasked positive is NaN.
  mask2 = mask.copy()
  mask2[y[:, 2] == 1, 2] = 0
  assert np.isnan(M.per_class_auc(y_noisy, s, mask2)[2])


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_topk_accuracy_matches_sklearn(k):
  rng = np.random.default_rng(6)
  n, c = 500, 7
  ids = rng.integers(0, c, size=n)
  s = rng.normal(size=(n, c))
  s[np.arange(n), ids] += 0.8
  want = skm.top_k_accuracy_score(ids, s, k=k, labels=np.arange(c))
  assert M.topk_accuracy(ids, s, k) == pytest.approx(want)
  assert M.topk_accuracy(np.eye(c)[ids], s, k) == pytest.approx(want)
  w = rng.random(n)
  assert M.topk_accuracy(ids, s, k, sample_weight=w) == pytest.approx(
      skm.top_k_accuracy_score(ids, s, k=k, labels=np.arange(c), sample_weight=w))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_topk_ties_match_sklearn_and_never_all_favour_the_true_class(k):
  """Regression: ties were resolved in the true class's favour (constant scores → 1.0)."""
  rng = np.random.default_rng(60)
  n, c = 400, 5
  ids = rng.integers(0, c, size=n)
  coarse = rng.integers(0, 3, size=(n, c)).astype(np.float64)  # many ties
  w = rng.random(n)
  for s in (coarse, np.zeros((n, c))):
    want = skm.top_k_accuracy_score(ids, s, k=k, labels=np.arange(c))
    assert M.topk_accuracy(ids, s, k) == pytest.approx(want)
    assert M.topk_accuracy(ids, s, k, sample_weight=w) == pytest.approx(
        skm.top_k_accuracy_score(ids, s, k=k, labels=np.arange(c), sample_weight=w))
  # Constant scores: sklearn ranks the highest class indices first → chance-like, not 1.
  assert M.topk_accuracy(ids, np.zeros((n, c)), k) == pytest.approx(np.mean(ids >= c - k))
  # Batched weights give the same as one call per row.
  ws = rng.random((3, n))
  np.testing.assert_allclose(M.topk_accuracy(ids, coarse, k, sample_weight=ws),
                             [M.topk_accuracy(ids, coarse, k, sample_weight=r) for r in ws])
