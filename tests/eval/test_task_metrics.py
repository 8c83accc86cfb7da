"""evaluate_predictions against scikit-learn, its JSON/CSV output, and the main metric."""

import csv
import json

import numpy as np
import pytest
from sklearn import metrics as skm

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import metrics as M
from remedis_tf.eval import task_metrics as T
from tests.eval.score_data import binary_data

# Tolerances here (docs/testing.md):
# derived. float64 numpy/sklearn references of exact quantities (AUC, accuracies,
# sensitivity, percentiles of the same resamples): they differ by summation order only,
# <= n*2^-53 ~ 1e-13, hence abs=1e-12 / approx defaults. softmax_log_odds against a logaddexp
# reference: both float64 log-sum-exps of <= 10 terms, rel err <= 10*2^-53, so rtol=1e-12 plus
# atol=1e-9 (cancellation near 0 odds), and 1e-12 on the probabilities in [0, 1].


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
  res = T.evaluate_predictions("multiclass", ids, probs, num_bootstrap=0, topk=(1, 2, 3),
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
    T.evaluate_predictions("multiclass", ids, probs, num_bootstrap=0, logits=logits[:, :2])



def test_evaluate_multilabel_values_and_shape(tmp_path):
  rng = np.random.default_rng(14)
  n, k = 300, 3
  y = (rng.random((n, k)) < 0.4).astype(float)
  s = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) + 1.5 * y - 0.5)))
  mask = (rng.random((n, k)) < 0.9).astype(float)
  patients = np.repeat(np.arange(150), 2)
  names = ["atelectasis", "cardiomegaly", "edema"]
  res = T.evaluate_predictions("multilabel", y, s, mask, patients=patients, label_names=names,
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
  T.write_metrics(res, str(jp), str(cp))
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
  res = T.evaluate_predictions("multilabel", y, s, patients=patients, num_bootstrap=r,
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
  res = T.evaluate_predictions("multilabel", y, s, patients=patients, num_bootstrap=300)
  assert res["mean_auc_classes"] == ["class_0", "class_2"]
  assert res["mean_auc_excluded_classes"] == ["class_1"]
  assert res["metrics"]["mean_auc"]["value"] == pytest.approx(np.mean(
      [skm.roc_auc_score(y[:, j], s[:, j]) for j in (0, 2)]))
  assert 0 < res["metrics"]["mean_auc"]["num_undefined"] < 300
  # Multi-class: a class present in 2 of 40 patients makes some resamples undefined too.
  ids = np.where(y[:, 2] == 1, 2, rng.integers(0, 2, size=y.shape[0]))
  logits = rng.normal(size=(y.shape[0], 3))
  mc = T.evaluate_predictions("multiclass", ids, logits, patients=patients,
                              num_bootstrap=300, seed=1)
  undefined = mc["metrics"]["mean_auc"]["num_undefined"]
  assert undefined == mc["per_class"]["class_2"]["auc"]["num_undefined"] > 0
  assert mc["metrics"]["top1_accuracy"]["num_undefined"] == 0


def test_evaluate_binary_vector_input_and_no_bootstrap():
  rng = np.random.default_rng(15)
  y, s = binary_data(rng, 100)
  res = T.evaluate_predictions("binary", y, s, num_bootstrap=0)
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
  res = T.evaluate_predictions("multiclass", np.eye(c)[ids], p, num_bootstrap=100)
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
  res2 = T.evaluate_predictions("multiclass", ids, p, mask, num_bootstrap=0)
  assert res2["metrics"]["top1_accuracy"]["value"] == pytest.approx(
      skm.accuracy_score(ids[100:], p[100:].argmax(1)))


def test_evaluate_errors():
  y = np.zeros((4, 2))
  s = np.zeros((4, 2))
  with pytest.raises(ConfigError, match="task"):
    T.evaluate_predictions("regression", y, s)
  with pytest.raises(ConfigError, match="label_names"):
    T.evaluate_predictions("multilabel", y, s, label_names=["a"])
  with pytest.raises(DataError, match="shape"):
    T.evaluate_predictions("multilabel", np.zeros((4, 3)), s)
  with pytest.raises(ConfigError, match="'b'"):
    T.evaluate_predictions("multilabel", y, s, label_names=["a", "b"], operating_point={"a": 0.5})


# --------------------------------------------------------------------------- main metric


def test_main_metric_default_by_task_and_selection_order():
  rng = np.random.default_rng(17)
  ids = rng.integers(0, 3, size=60)
  mc = T.evaluate_predictions("multiclass", ids, rng.normal(size=(60, 3)), num_bootstrap=0)
  assert T.main_metric(mc) == ("top1_accuracy", mc["metrics"]["top1_accuracy"])
  # Model selection prefers mean AUC, which every task computes (multi-class: one-vs-rest).
  assert T.main_metric(mc, T.SELECTION_METRICS) == ("mean_auc", mc["metrics"]["mean_auc"])
  assert T.main_metric(mc, "top3_accuracy")[1]["value"] == pytest.approx(1.0)  # K = 3
  y, s = binary_data(rng, 60)
  b = T.evaluate_predictions("binary", y, s, num_bootstrap=0)
  assert T.main_metric(b) == T.main_metric(b, T.SELECTION_METRICS) == (
      "mean_auc", b["metrics"]["mean_auc"])
  with pytest.raises(ConfigError, match="top1_accuracy"):
    T.main_metric(b, "top1_accuracy")
