"""Frozen-feature evaluation: a linear probe and a kNN classifier on a backbone's features.

The first check of a self-supervised stage: freeze the backbone, embed a labelled train
set and a labelled test set (evaluation preprocessing), and measure how well the pooled
features separate the labels on the test set, without fine-tuning anything:

* **linear probe** — one L2-regularised logistic regression per finding (multi-label /
  binary; one multinomial model for multi-class) on standardised train features;
* **kNN** — the cosine-similarity weighted kNN of :mod:`remedis_tf.eval.knn`, with the
  train set as the neighbour bank.

Intervals are patient-level percentile bootstraps over test patients. With several
models (e.g. stage 1 and stage 2 of one run), each model after the first also gets the
paired difference to the first model, bootstrapped over the same resampled patients.
The mean AUC of a resample is undefined (and counted, not averaged over fewer classes)
when any finding has no positive or no negative test image in it.

This module scores precomputed features; embedding the sets with each model and the
comparison of several models is :func:`remedis_tf.runs.frozen.compare_models`.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional

import numpy as np

from remedis_tf.data import augment as augment_lib
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import bootstrap, knn, resampling

METHODS = ("linear_probe", "knn")


@dataclasses.dataclass(frozen=True)
class FrozenEvalConfig:
  """Settings of the frozen-feature evaluation.

  Attributes:
    knn_k: neighbours per test image.
    knn_temperature: similarity temperature of the kNN neighbour weights.
    probe_c: inverse L2 strength of the logistic-regression probe (sklearn's ``C``).
    probe_max_iter: L-BFGS iterations of the probe.
    num_bootstrap: patient-level bootstrap resamples of the test set.
    confidence: interval coverage.
    seed: bootstrap seed.
    batch_size: images per forward pass when embedding.
    crop_fraction: evaluation centre crop before resizing.
  """
  knn_k: int = 20
  knn_temperature: float = 0.07
  probe_c: float = 1.0
  probe_max_iter: int = 1000
  num_bootstrap: int = 1000
  confidence: float = 0.95
  seed: int = 0
  batch_size: int = 64
  crop_fraction: float = augment_lib.EVAL_CROP_FRACTION

  def __post_init__(self):
    if self.knn_k < 1:
      raise ConfigError(f"must be >= 1, got {self.knn_k}", field="knn_k")
    if self.probe_c <= 0:
      raise ConfigError(f"must be > 0, got {self.probe_c}", field="probe_c")
    if self.num_bootstrap < 1:
      raise ConfigError(f"must be >= 1, got {self.num_bootstrap}", field="num_bootstrap")


def linear_probe_scores(train_x: np.ndarray, train_y: np.ndarray,
                        train_mask: Optional[np.ndarray], test_x: np.ndarray, task: str,
                        c: float = 1.0, max_iter: int = 1000) -> np.ndarray:
  """Test scores ``[N_test, K]`` of logistic regressions fit on frozen train features.

  Features are standardised with the train mean/std. ``multilabel``/``binary``: one
  binary model per column on the rows whose mask is 1 (probability of the positive
  class; NaN column when the train labels of that column are all one value).
  ``multiclass``: one multinomial model on ``argmax(train_y)`` (class probabilities).
  """
  # sklearn is imported here: only the frozen evaluation needs it.
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  train_x = np.asarray(train_x, np.float64)
  test_x = np.asarray(test_x, np.float64)
  y = np.asarray(train_y, np.float64)
  if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
    raise DataError(f"train features {train_x.shape} and test features {test_x.shape} must "
                    "be [N, C] with the same C")
  mean, std = train_x.mean(0), train_x.std(0)
  std = np.where(std > 1e-12, std, 1.0)
  xs, ts = (train_x - mean) / std, (test_x - mean) / std
  k = y.shape[1]
  out = np.full((test_x.shape[0], k), np.nan)
  if task == "multiclass":
    ids = np.argmax(y, axis=1)
    model = LogisticRegression(C=c, max_iter=max_iter).fit(xs, ids)
    out[:] = 0.0
    out[:, model.classes_] = model.predict_proba(ts)
    return out
  m = np.ones_like(y) if train_mask is None else np.asarray(train_mask, np.float64)
  for j in range(k):
    keep = m[:, j] > 0
    labels = y[keep, j] > 0.5
    if labels.all() or not labels.any():
      continue
    model = LogisticRegression(C=c, max_iter=max_iter).fit(xs[keep], labels)
    out[:, j] = model.predict_proba(ts)[:, 1]
  return out


def evaluate_features(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
                      task: str, config: FrozenEvalConfig = FrozenEvalConfig()
                      ) -> Dict[str, Dict]:
  """Linear probe and kNN on precomputed features.

  Args:
    train, test: dicts with ``embeddings [N, C]``, ``labels [N, K]``, ``mask [N, K]``
      (test: also ``patients [N]`` for the patient-level bootstrap).
    task: ``multilabel`` | ``binary`` | ``multiclass``.
    config: see :class:`FrozenEvalConfig`.
  Returns:
    ``{method: {"metric": name, "value", "lower", "upper", "std", "num_undefined",
    "scores": [N_test, K] float64}}`` for ``method`` in :data:`METHODS`. Undefined
    scores (a probe column whose train labels are constant, a kNN query without a
    neighbour knowing the label) are scored as 0.5 (multi-label) / 0 (multi-class).
  """
  if task not in ("multilabel", "binary", "multiclass"):
    raise ConfigError(f"frozen-feature evaluation needs labels; task is {task!r}")
  scores = {
      "linear_probe": linear_probe_scores(train["embeddings"], train["labels"], train["mask"],
                                          test["embeddings"], task, config.probe_c,
                                          config.probe_max_iter),
      "knn": knn.knn_bank_scores(test["embeddings"], train["embeddings"], train["labels"],
                                 train["mask"], k=config.knn_k,
                                 temperature=config.knn_temperature),
  }
  name, fn = resampling.metric_for(task)
  out = {}
  for method, s in scores.items():
    s = np.nan_to_num(s, nan=0.5 if task != "multiclass" else 0.0)
    ci = bootstrap.bootstrap_ci(fn, test["labels"], s, test["mask"], groups=test["patients"],
                                num_samples=config.num_bootstrap,
                                confidence=config.confidence, seed=config.seed)
    out[method] = {"metric": name, **ci.to_dict(), "scores": s}
  return out


def paired_difference(test: Mapping[str, np.ndarray], scores_a: np.ndarray,
                      scores_b: np.ndarray, task: str,
                      config: FrozenEvalConfig = FrozenEvalConfig()) -> Dict:
  """``metric(scores_b) − metric(scores_a)`` on the same test images, with a paired
  patient-level bootstrap interval (both models scored on each resample)."""
  _, fn = resampling.metric_for(task)

  def diff(labels, sa, sb, mask, sample_weight=None):
    return fn(labels, sb, mask, sample_weight) - fn(labels, sa, mask, sample_weight)

  ci = bootstrap.bootstrap_ci(diff, test["labels"], scores_a, scores_b, test["mask"],
                              groups=test["patients"], num_samples=config.num_bootstrap,
                              confidence=config.confidence, seed=config.seed)
  return ci.to_dict()
