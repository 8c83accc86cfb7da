"""Frozen-feature evaluation: probe and kNN numerics against sklearn/numpy, bootstrap
intervals, and the run-directory path on a tiny trained model."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import frozen, knn

# Tolerances here (docs/testing.md):
# derived/measured. Linear probe vs sklearn LogisticRegression: both float64 lbfgs fits of
# the same convex problem; they agree to the solvers' convergence (~1e-8 here), so rtol=1e-6,
# atol=1e-8. Probabilities sum to 1 in float64 (rtol=1e-9 >> 1e-16); metric values are exact
# rationals (abs=1e-12). kNN scores are exact vote fractions (default rtol).


def _features(rng, n, signal):
  y = (rng.random((n, 2)) < 0.4).astype(float)
  x = rng.normal(size=(n, 5))
  x[:, 0] += signal * y[:, 0]
  x[:, 1] += signal * y[:, 1]
  return x, y


def test_linear_probe_matches_sklearn_on_standardised_features():
  rng = np.random.default_rng(0)
  x, y = _features(rng, 60, 2.0)
  t, _ = _features(rng, 20, 2.0)
  mask = np.ones_like(y)
  mask[:10, 1] = 0  # masked rows are left out of column 1's fit
  got = frozen.linear_probe_scores(x, y, mask, t, "multilabel", c=0.5)
  mu, sd = x.mean(0), x.std(0)
  for j in range(2):
    keep = mask[:, j] > 0
    want = LogisticRegression(C=0.5, max_iter=1000).fit(
        (x[keep] - mu) / sd, y[keep, j]).predict_proba((t - mu) / sd)[:, 1]
    np.testing.assert_allclose(got[:, j], want, rtol=1e-6, atol=1e-8)


def test_linear_probe_constant_column_is_nan_and_multiclass_probabilities():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(30, 4))
  y = np.zeros((30, 2))
  y[:, 0] = (x[:, 0] > 0)
  out = frozen.linear_probe_scores(x, y, None, x[:5], "multilabel")
  assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, 0]).all()
  ids = rng.integers(0, 3, 30)
  onehot = np.eye(3)[ids]
  probs = frozen.linear_probe_scores(x, onehot, None, x, "multiclass")
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)


def test_evaluate_features_intervals_and_separation():
  rng = np.random.default_rng(2)
  xtr, ytr = _features(rng, 200, 3.0)
  xte, yte = _features(rng, 120, 3.0)
  pats = np.repeat(np.arange(60), 2).astype(str)
  train = {"embeddings": xtr, "labels": ytr, "mask": np.ones_like(ytr)}
  test = {"embeddings": xte, "labels": yte, "mask": np.ones_like(yte), "patients": pats}
  cfg = frozen.FrozenEvalConfig(num_bootstrap=200, knn_k=10)
  good = frozen.evaluate_features(train, test, "multilabel", cfg)
  # Point estimates are the plain mean AUC of the scores (independent sklearn AUC).
  for method in frozen.METHODS:
    s = good[method]["scores"]
    want = np.mean([roc_auc_score(yte[:, j], s[:, j]) for j in range(2)])
    assert good[method]["value"] == pytest.approx(want, abs=1e-12)
    assert good[method]["lower"] <= good[method]["value"] <= good[method]["upper"]
  want_knn = knn.knn_bank_scores(xte, xtr, ytr, None, k=10, temperature=0.07)
  np.testing.assert_allclose(good["knn"]["scores"], want_knn)
  # Features without signal: near chance, and the paired difference excludes 0.
  noise = {"embeddings": rng.normal(size=xte.shape), "labels": yte, "mask": test["mask"],
           "patients": pats}
  bad = frozen.evaluate_features({**train, "embeddings": rng.normal(size=xtr.shape)}, noise,
                                 "multilabel", cfg)
  assert bad["linear_probe"]["upper"] < good["linear_probe"]["lower"]
  diff = frozen.paired_difference(test, bad["linear_probe"]["scores"],
                                  good["linear_probe"]["scores"], "multilabel", cfg)
  assert diff["value"] == pytest.approx(good["linear_probe"]["value"]
                                        - bad["linear_probe"]["value"])
  assert diff["lower"] > 0


def test_mean_auc_resample_with_a_missing_class_is_undefined_not_averaged():
  # One positive image of class 1 (patient p0): every resample without p0 is undefined.
  y = np.zeros((20, 2))
  y[::2, 0] = 1
  y[0, 1] = 1
  pats = np.repeat(np.arange(10), 2).astype(str)
  rng = np.random.default_rng(3)
  test = {"embeddings": rng.normal(size=(20, 3)), "labels": y, "mask": np.ones_like(y),
          "patients": pats}
  res = frozen.evaluate_features(test, test, "multilabel",
                                 frozen.FrozenEvalConfig(num_bootstrap=300, knn_k=3))
  # P(p0 not drawn in 10 draws of 10) = 0.9^10 ≈ 0.35.
  assert 0.2 * 300 < res["knn"]["num_undefined"] < 0.5 * 300


def test_config_and_input_errors():
  with pytest.raises(ConfigError, match="knn_k"):
    frozen.FrozenEvalConfig(knn_k=0)
  with pytest.raises(ConfigError, match="task"):
    frozen.evaluate_features({}, {}, "unlabelled")
  with pytest.raises(DataError, match="same C"):
    frozen.linear_probe_scores(np.zeros((3, 2)), np.zeros((3, 1)), None, np.zeros((2, 3)),
                               "binary")
