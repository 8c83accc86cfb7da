"""Metrics against scikit-learn, and bootstrap behaviour."""

import csv
import json
import time

import numpy as np
import pytest
from sklearn import metrics as skm

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import metrics as M


def _binary_data(rng, n, ties=False):
  y = (rng.random(n) < 0.3).astype(float)
  s = rng.normal(size=n) + y
  if ties:
    s = np.round(s, 1)  # many exact ties
  return y, s


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn(ties, seed):
  rng = np.random.default_rng(seed)
  y, s = _binary_data(rng, 300, ties)
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
  y, s = _binary_data(rng, 200, ties=True)
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
  y, s = _binary_data(rng, 150, ties)
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


def test_multiclass_ranks_come_from_logits_not_underflowing_probabilities():
  """Regression: float32 softmax probabilities underflow to tied zeros, so top-k and AUC
  computed on them depend on the class order; ``logits=`` ranks on log-softmax."""
  rng = np.random.default_rng(61)
  n, c = 300, 6
  ids = rng.integers(0, c, size=n)
  logits = rng.normal(scale=60.0, size=(n, c))  # spreads of ~100+ nats: exp underflows
  probs = (np.exp(logits - logits.max(1, keepdims=True))
           / np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
  probs = probs.astype(np.float32)
  assert (probs == 0).sum() > n  # the data does exercise the underflow
  res = M.evaluate_predictions("multiclass", ids, probs, num_bootstrap=0, topk=(1, 2, 3),
                               logits=logits)["metrics"]
  for kk in (1, 2, 3):
    assert res[f"top{kk}_accuracy"]["value"] == pytest.approx(
        skm.top_k_accuracy_score(ids, logits, k=kk, labels=np.arange(c)))
  # One-vs-rest AUC on the log-odds z_j − logsumexp_{i≠j} z_i (monotone in p_j), here
  # computed by brute force.
  odds = np.stack([logits[:, j] - np.logaddexp.reduce(np.delete(logits, j, 1), 1)
                   for j in range(c)], 1)
  np.testing.assert_allclose(M.softmax_log_odds(logits), odds, rtol=1e-12, atol=1e-9)
  assert res["mean_auc"]["value"] == pytest.approx(
      np.mean([skm.roc_auc_score(ids == j, odds[:, j]) for j in range(c)]))
  p64 = np.exp(logits - np.logaddexp.reduce(logits, 1)[:, None])
  np.testing.assert_allclose(1.0 / (1.0 + np.exp(-M.softmax_log_odds(logits))), p64,
                             atol=1e-12)
  with pytest.raises(DataError, match="logits shape"):
    M.evaluate_predictions("multiclass", ids, probs, num_bootstrap=0, logits=logits[:, :2])


def test_sensitivity_specificity_against_confusion_matrix():
  rng = np.random.default_rng(7)
  y, s = _binary_data(rng, 300)
  sens, spec = M.sensitivity_specificity(y, s, 0.4)
  tn, fp, fn, tp = skm.confusion_matrix(y, (s >= 0.4).astype(int)).ravel()
  assert sens == pytest.approx(tp / (tp + fn))
  assert spec == pytest.approx(tn / (tn + fp))


def test_operating_point_thresholds_hit_targets_and_are_extreme():
  rng = np.random.default_rng(8)
  y, s = _binary_data(rng, 301, ties=True)
  for target in (0.5, 0.8, 0.9, 0.95, 1.0):
    t = M.threshold_at_sensitivity(y, s, target)
    assert M.sensitivity_specificity(y, s, t)[0] >= target - 1e-12
    larger = s[s > t]
    if larger.size:  # the next larger candidate misses the target
      assert M.sensitivity_specificity(y, s, larger.min())[0] < target
    t = M.threshold_at_specificity(y, s, target)
    assert M.sensitivity_specificity(y, s, t)[1] >= target - 1e-12
    smaller = s[s < t]
    if smaller.size:
      assert M.sensitivity_specificity(y, s, smaller.max())[1] < target
  with pytest.raises(ConfigError):
    M.threshold_at_sensitivity(y, s, 0.0)
  th = M.operating_thresholds(np.stack([y, 1 - y], 1), np.stack([s, -s], 1),
                              target_specificity=0.9)
  assert th.shape == (2,)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_vectorised_equals_index_resampling():
  rng = np.random.default_rng(9)
  y, s = _binary_data(rng, 120, ties=True)
  groups = rng.integers(0, 40, size=120)
  fast = M.bootstrap_ci(M.roc_auc, y, s, groups=groups, num_samples=200, seed=3)
  slow = M.bootstrap_ci(lambda a, b: M.roc_auc(a, b), y, s, groups=groups, num_samples=200,
                        seed=3)
  assert fast.lower == pytest.approx(slow.lower, abs=1e-12)
  assert fast.upper == pytest.approx(slow.upper, abs=1e-12)
  assert fast.std == pytest.approx(slow.std, abs=1e-12)
  assert fast.unit == "patient"


def test_bootstrap_contains_estimate_and_shrinks_with_more_data():
  rng = np.random.default_rng(10)
  widths = []
  for n in (100, 1600):
    y, s = _binary_data(rng, n)
    res = M.bootstrap_ci(M.roc_auc, y, s, num_samples=400, seed=0)
    assert res.estimate == pytest.approx(skm.roc_auc_score(y, s))
    assert res.lower <= res.estimate <= res.upper
    widths.append(res.upper - res.lower)
  # Width scales like 1/sqrt(n): 16x data → about 4x narrower.
  assert widths[1] < widths[0] / 2.5


def test_bootstrap_seeded_and_confidence_monotone():
  rng = np.random.default_rng(11)
  y, s = _binary_data(rng, 200)
  a = M.bootstrap_ci(M.roc_auc, y, s, num_samples=300, seed=1)
  b = M.bootstrap_ci(M.roc_auc, y, s, num_samples=300, seed=1)
  c = M.bootstrap_ci(M.roc_auc, y, s, num_samples=300, seed=2)
  assert (a.lower, a.upper) == (b.lower, b.upper)
  assert (a.lower, a.upper) != (c.lower, c.upper)
  narrow = M.bootstrap_ci(M.roc_auc, y, s, num_samples=300, seed=1, confidence=0.5)
  assert a.lower < narrow.lower and narrow.upper < a.upper


def test_patient_resampling_differs_from_example_resampling():
  # Each patient contributes 8 identical copies of one example. Resampling patients is
  # resampling the 50 distinct examples; resampling images treats 400 copies as independent
  # and is about sqrt(8) times too narrow.
  rng = np.random.default_rng(12)
  y0, s0 = _binary_data(rng, 50)
  y, s = np.repeat(y0, 8), np.repeat(s0, 8)
  patients = np.repeat(np.arange(50), 8)
  by_patient = M.bootstrap_ci(M.roc_auc, y, s, groups=patients, num_samples=500, seed=0)
  by_example = M.bootstrap_ci(M.roc_auc, y, s, num_samples=500, seed=0)
  base = M.bootstrap_ci(M.roc_auc, y0, s0, num_samples=500, seed=0)
  # Patient resampling of the copies draws exactly the same resamples as the 50 originals.
  assert by_patient.std == pytest.approx(base.std, abs=1e-12)
  assert by_patient.lower == pytest.approx(base.lower, abs=1e-12)
  assert by_example.std < by_patient.std / 2


def test_bootstrap_counts_undefined_resamples():
  y = np.zeros(30)
  y[0] = 1  # one positive: many resamples miss it
  s = np.linspace(0, 1, 30)
  res = M.bootstrap_ci(M.roc_auc, y, s, num_samples=200, seed=0)
  # P(positive not drawn) = (29/30)^30 ≈ 0.36.
  assert 40 < res.num_undefined < 110
  assert np.isfinite(res.lower) and np.isfinite(res.upper)


def test_bootstrap_speed_5k_by_5_classes():
  rng = np.random.default_rng(13)
  y = (rng.random((5000, 5)) < 0.3).astype(float)
  s = rng.normal(size=(5000, 5)) + y
  patients = rng.integers(0, 2000, size=5000)
  t0 = time.perf_counter()
  res = M.bootstrap_ci(M.per_class_auc, y, s, groups=patients, num_samples=1000, seed=0)
  assert time.perf_counter() - t0 < 8.0
  assert res.lower.shape == (5,)
  assert np.all(res.lower <= res.estimate) and np.all(res.estimate <= res.upper)


# ------------------------------------------------------------------ evaluate_predictions


def test_evaluate_multilabel_values_and_shape(tmp_path):
  rng = np.random.default_rng(14)
  n, k = 300, 3
  y = (rng.random((n, k)) < 0.4).astype(float)
  s = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) + 1.5 * y - 0.5)))
  mask = (rng.random((n, k)) < 0.9).astype(float)
  patients = np.repeat(np.arange(150), 2)
  names = ["atelectasis", "cardiomegaly", "edema"]
  res = M.evaluate_predictions("multilabel", y, s, mask, patients=patients, label_names=names,
                               operating_point={"atelectasis": 0.5, "cardiomegaly": 0.4,
                                                "edema": 0.6}, num_bootstrap=200)
  assert res["num_patients"] == 150 and res["bootstrap"]["unit"] == "patient"
  aucs = []
  for j, name in enumerate(names):
    keep = mask[:, j] > 0
    want = skm.roc_auc_score(y[keep, j], s[keep, j])
    entry = res["per_class"][name]
    assert entry["auc"]["value"] == pytest.approx(want)
    assert entry["auc"]["lower"] <= want <= entry["auc"]["upper"]
    t = entry["threshold"]
    tn, fp, fn, tp = skm.confusion_matrix(y[keep, j], (s[keep, j] >= t).astype(int)).ravel()
    assert entry["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert entry["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    assert entry["num_positive"] == tp + fn
    aucs.append(want)
  assert res["metrics"]["mean_auc"]["value"] == pytest.approx(np.mean(aucs))
  json.dumps(res, allow_nan=False)  # JSON-friendly
  jp, cp = tmp_path / "m.json", tmp_path / "m.csv"
  M.write_metrics(res, str(jp), str(cp))
  assert json.loads(jp.read_text())["per_class"]["edema"]["auc"]["value"] == pytest.approx(aucs[2])
  rows = list(csv.DictReader(cp.open()))
  assert len(rows) == 1 + 3 * k
  assert {r["metric"] for r in rows} == {"mean_auc", "auc", "sensitivity", "specificity"}
  edema = [r for r in rows if r["class"] == "edema" and r["metric"] == "auc"][0]
  assert float(edema["value"]) == pytest.approx(aucs[2])


def _rare_class_data(rng, num_patients=40, rare_patients=2):
  """Multi-label, 2 images per patient; class 2 is positive in ``rare_patients`` only."""
  n = 2 * num_patients
  patients = np.repeat(np.arange(num_patients), 2)
  y = (rng.random((n, 3)) < 0.4).astype(float)
  y[:, 2] = np.isin(patients, np.arange(rare_patients)).astype(float)
  s = rng.normal(size=(n, 3)) + y
  return y, s, patients


def test_bootstrap_mean_auc_never_averages_fewer_classes():
  """Regression: a resample missing the rare class's positives averaged the other two
  classes and counted as defined (num_undefined 0). Now such resamples are undefined,
  counted, and left out of the interval; checked against a direct numpy/sklearn loop over
  the same patient draws (bootstrap_ci: rng = default_rng(seed), patients in sorted order,
  draws = rng.integers(0, G, (R, G)))."""
  rng = np.random.default_rng(30)
  y, s, patients = _rare_class_data(rng)
  r, g = 1000, 40
  res = M.evaluate_predictions("multilabel", y, s, patients=patients, num_bootstrap=r,
                               seed=5)
  draws = np.random.default_rng(5).integers(0, g, size=(r, g))
  means = []
  for row in draws:
    idx = np.concatenate([np.flatnonzero(patients == p) for p in row])
    yy, ss = y[idx], s[idx]
    if any(len(np.unique(yy[:, j])) < 2 for j in range(3)):
      continue
    means.append(np.mean([skm.roc_auc_score(yy[:, j], ss[:, j]) for j in range(3)]))
  got = res["metrics"]["mean_auc"]
  assert got["num_undefined"] == r - len(means)
  lo, hi = np.percentile(means, [2.5, 97.5])
  assert got["lower"] == pytest.approx(lo, abs=1e-12)
  assert got["upper"] == pytest.approx(hi, abs=1e-12)
  assert got["std"] == pytest.approx(np.std(means, ddof=1), abs=1e-12)
  # P(neither rare patient drawn) = (38/40)^40 ≈ 0.128: the count is near R times that.
  expect = r * (38 / 40) ** 40
  assert abs(got["num_undefined"] - expect) < 4 * np.sqrt(expect)
  assert res["per_class"]["class_2"]["auc"]["num_undefined"] == got["num_undefined"]
  assert res["mean_auc_classes"] == ["class_0", "class_1", "class_2"]


def test_mean_auc_classes_and_multiclass_rare_class_counted():
  rng = np.random.default_rng(31)
  y, s, patients = _rare_class_data(rng)
  y[:, 1] = 0.0  # no positive at all: left out of the mean, named in the result
  res = M.evaluate_predictions("multilabel", y, s, patients=patients, num_bootstrap=300)
  assert res["mean_auc_classes"] == ["class_0", "class_2"]
  assert res["mean_auc_excluded_classes"] == ["class_1"]
  assert res["metrics"]["mean_auc"]["value"] == pytest.approx(np.mean(
      [skm.roc_auc_score(y[:, j], s[:, j]) for j in (0, 2)]))
  assert 0 < res["metrics"]["mean_auc"]["num_undefined"] < 300
  # Multi-class: a class present in 2 of 40 patients makes some resamples undefined too.
  ids = np.where(y[:, 2] == 1, 2, rng.integers(0, 2, size=y.shape[0]))
  logits = rng.normal(size=(y.shape[0], 3))
  mc = M.evaluate_predictions("multiclass", ids, logits, patients=patients,
                              num_bootstrap=300, seed=1)
  undefined = mc["metrics"]["mean_auc"]["num_undefined"]
  assert undefined == mc["per_class"]["class_2"]["auc"]["num_undefined"] > 0
  assert mc["metrics"]["top1_accuracy"]["num_undefined"] == 0


def test_evaluate_binary_vector_input_and_no_bootstrap():
  rng = np.random.default_rng(15)
  y, s = _binary_data(rng, 100)
  res = M.evaluate_predictions("binary", y, s, num_bootstrap=0)
  assert res["metrics"]["mean_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, s))
  assert res["metrics"]["mean_auc"]["lower"] is None
  assert list(res["per_class"]) == ["class_0"]


def test_evaluate_multiclass_matches_sklearn():
  rng = np.random.default_rng(16)
  n, c = 400, 6
  ids = rng.integers(0, c, size=n)
  logits = rng.normal(size=(n, c))
  logits[np.arange(n), ids] += 1.0
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  res = M.evaluate_predictions("multiclass", np.eye(c)[ids], p, num_bootstrap=100)
  m = res["metrics"]
  assert m["top1_accuracy"]["value"] == pytest.approx(skm.accuracy_score(ids, p.argmax(1)))
  assert m["top3_accuracy"]["value"] == pytest.approx(
      skm.top_k_accuracy_score(ids, p, k=3, labels=np.arange(c)))
  assert m["mean_auc"]["value"] == pytest.approx(
      skm.roc_auc_score(ids, p, multi_class="ovr", average="macro"))
  assert m["top1_accuracy"]["lower"] <= m["top1_accuracy"]["value"] <= m["top1_accuracy"]["upper"]
  # Masked-out rows are ignored.
  mask = np.ones((n, c))
  mask[:100] = 0
  res2 = M.evaluate_predictions("multiclass", ids, p, mask, num_bootstrap=0)
  assert res2["metrics"]["top1_accuracy"]["value"] == pytest.approx(
      skm.accuracy_score(ids[100:], p[100:].argmax(1)))


def test_evaluate_errors():
  y = np.zeros((4, 2))
  s = np.zeros((4, 2))
  with pytest.raises(ConfigError, match="task"):
    M.evaluate_predictions("regression", y, s)
  with pytest.raises(ConfigError, match="label_names"):
    M.evaluate_predictions("multilabel", y, s, label_names=["a"])
  with pytest.raises(DataError, match="shape"):
    M.evaluate_predictions("multilabel", np.zeros((4, 3)), s)
  with pytest.raises(ConfigError, match="'b'"):
    M.evaluate_predictions("multilabel", y, s, label_names=["a", "b"], operating_point={"a": 0.5})
