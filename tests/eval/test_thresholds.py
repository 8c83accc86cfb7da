"""Sensitivity/specificity, threshold rules and per-class operating points."""

import numpy as np
import pytest
from sklearn import metrics as skm

from remedis_tf.errors import ConfigError
from remedis_tf.eval import thresholds
from tests.eval.score_data import binary_data

# Tolerances here (docs/testing.md):
# derived: exact count ratios in float64 (approx default rel 1e-6 is far above 1e-16).


def sensitivity_specificity(y, s, threshold):
  """Independent reference: sklearn's confusion matrix at ``score >= threshold``."""
  tn, fp, fn, tp = skm.confusion_matrix(y, (s >= threshold).astype(int), labels=[0, 1]).ravel()
  return tp / (tp + fn), tn / (tn + fp)


def test_operating_point_thresholds_hit_targets_and_are_extreme():
  rng = np.random.default_rng(8)
  y, s = binary_data(rng, 301, ties=True)
  for target in (0.5, 0.8, 0.9, 0.95, 1.0):
    t = thresholds.threshold_at_sensitivity(y, s, target)
    assert sensitivity_specificity(y, s, t)[0] >= target - 1e-12
    larger = s[s > t]
    if larger.size:  # the next larger candidate misses the target
      assert sensitivity_specificity(y, s, larger.min())[0] < target
    t = thresholds.threshold_at_specificity(y, s, target)
    assert sensitivity_specificity(y, s, t)[1] >= target - 1e-12
    smaller = s[s < t]
    if smaller.size:
      assert sensitivity_specificity(y, s, smaller.max())[1] < target
  with pytest.raises(ConfigError):
    thresholds.threshold_at_sensitivity(y, s, 0.0)
  th, _ = thresholds.choose_thresholds(thresholds.OperatingPoint("specificity", 0.9),
                                       np.stack([y, 1 - y], 1), np.stack([s, -s], 1),
                                       fallback=None)
  assert len(th) == 2
  # fallback=None: each class gets its rule's own threshold, unmodified.
  assert list(th.values()) == [thresholds.threshold_at_specificity(y, s, 0.9),
                               thresholds.threshold_at_specificity(1 - y, -s, 0.9)]


def _brute_youden(labels, scores):
  best, best_t = -2.0, None
  for t in sorted(set(scores.tolist()), reverse=True):
    pred = scores >= t
    j = pred[labels == 1].mean() + (~pred[labels == 0]).mean() - 1
    if j > best + 1e-12:
      best, best_t = j, t
  return best_t


def test_youden_threshold_matches_brute_force():
  rng = np.random.default_rng(0)
  for trial in range(20):
    n = int(rng.integers(5, 60))
    labels = rng.integers(0, 2, n).astype(float)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(labels * rng.uniform(0, 2), 1.0), 1)  # ties included
    assert thresholds.youden_threshold(labels, scores) == _brute_youden(labels, scores), trial
  assert np.isnan(thresholds.youden_threshold(np.ones(4), np.arange(4.0)))


def test_choose_thresholds_fallbacks_and_rules():
  labels = np.array([[1, 1], [0, 1], [1, 1], [0, 1]], float)
  scores = np.array([[0.9, 0.2], [0.1, 0.3], [0.7, 0.4], [0.8, 0.5]])
  mask = np.ones_like(labels)
  op = thresholds.parse_operating_point("specificity:1.0")
  t, notes = thresholds.choose_thresholds(op, labels, scores, mask, ["A", "B"])
  # Specificity 1 on A needs a threshold above the highest negative score (0.8).
  assert 0.8 < t["A"] <= 0.9
  assert t["B"] == 0.5 and "'B'" in notes[0]  # no negatives for B
  t, _ = thresholds.choose_thresholds(thresholds.parse_operating_point(0.3), labels, scores,
                                      mask, ["A", "B"])
  assert t == {"A": 0.3, "B": 0.3}


@pytest.mark.parametrize("spec,rule,value", [
    ("youden", "youden", None), ("sens:0.9", "sensitivity", 0.9),
    ("specificity:0.8", "specificity", 0.8), ("0.25", "fixed", 0.25), (0.5, "fixed", 0.5)])
def test_parse_operating_point(spec, rule, value):
  op = thresholds.parse_operating_point(spec)
  assert (op.rule, op.value) == (rule, value)


@pytest.mark.parametrize("spec", ["sens:1.5", "youdenx", "spec:", "nan", "sensitivity:0"])
def test_parse_operating_point_rejects(spec):
  with pytest.raises(ConfigError):
    thresholds.parse_operating_point(spec)
