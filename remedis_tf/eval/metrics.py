"""Evaluation metrics with bootstrap confidence intervals (pure numpy).

Inputs are numpy arrays (or anything ``np.asarray`` accepts), never tensors.

Every metric takes an optional ``sample_weight``: shape ``[N]`` gives one weighted value,
shape ``[R, N]`` gives ``R`` values at once (leading axis ``R``). The bootstrap expresses a
resample as integer weights (how many times each example was drawn), so metrics that
accept ``sample_weight`` are bootstrapped in a few vectorised passes instead of ``R``
Python calls. Any other ``metric_fn(*arrays)`` still works through index resampling.

AUC follows the Mann-Whitney form: a positive/negative pair with tied scores counts 1/2,
which is exactly the trapezoidal area under the ROC curve that scikit-learn computes.
Undefined values (a single class present, nothing unmasked) are NaN, never an exception.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from remedis_tf import io_utils
from remedis_tf.data.manifest import LABELLED_TASKS
from remedis_tf.errors import ConfigError, DataError

ArrayLike = Any
# Bound on R*N floats per vectorised chunk (keeps memory near 100 MB for R=1000, N=5k).
_CHUNK_ELEMENTS = 2_000_000
TASKS = LABELLED_TASKS


# ---------------------------------------------------------------------------- helpers


def _as_weights(sample_weight: Optional[ArrayLike], n: int) -> Tuple[np.ndarray, bool]:
  """Returns (weights ``[R, N]`` float64, batched?) from None / ``[N]`` / ``[R, N]``."""
  if sample_weight is None:
    return np.ones((1, n)), False
  w = np.asarray(sample_weight, np.float64)
  if w.ndim == 1:
    if w.shape[0] != n:
      raise DataError(f"sample_weight has {w.shape[0]} entries, expected {n}")
    return w[None, :], False
  if w.ndim != 2 or w.shape[1] != n:
    raise DataError(f"sample_weight must be [N] or [R, N] with N={n}, got shape {w.shape}")
  return w, True


def _unbatch(values: np.ndarray, batched: bool):
  """Drops the leading resample axis of an unbatched result; 0-d results become float."""
  if batched:
    return values
  out = values[0]
  return float(out) if np.ndim(out) == 0 else out


def _check_binary_labels(labels: np.ndarray, valid: np.ndarray, what: str = "labels"):
  bad = valid & ~((labels == 0) | (labels == 1))
  if bad.any():
    i = int(np.flatnonzero(bad.ravel())[0])
    raise DataError(f"{what} must be 0/1 where used; found {labels.ravel()[i]!r} at flat index {i}")


def _check_finite_scores(scores: np.ndarray, valid: np.ndarray):
  bad = valid & ~np.isfinite(scores)
  if bad.any():
    i = int(np.flatnonzero(bad.ravel())[0])
    raise DataError(f"scores must be finite; found {scores.ravel()[i]!r} at flat index {i}")


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num/den with NaN where den == 0 (no warnings)."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  out = np.full(np.broadcast(num, den).shape, np.nan)
  np.divide(num, den, out=out, where=den > 0)
  return out


# ---------------------------------------------------------------------------- ROC / AUC


def roc_auc(labels: ArrayLike, scores: ArrayLike, sample_weight: Optional[ArrayLike] = None):
  """Area under the ROC curve of one binary problem.

  Args:
    labels: ``[N]`` 0/1 ground truth.
    scores: ``[N]`` real scores (higher = more positive); ties count 1/2 per pair.
    sample_weight: optional ``[N]`` or ``[R, N]`` non-negative weights (0 excludes).

  Returns:
    float in [0, 1] (or ``[R]`` for batched weights); NaN where the (weighted) data has
    no positive or no negative example.
  """
  labels = np.asarray(labels, np.float64).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  if labels.shape != scores.shape:
    raise DataError(f"labels {labels.shape} and scores {scores.shape} differ in length")
  w, batched = _as_weights(sample_weight, labels.shape[0])
  used = (w > 0).any(0)
  _check_binary_labels(labels, used)
  _check_finite_scores(scores, used)
  if labels.shape[0] == 0:
    return _unbatch(np.full((w.shape[0],), np.nan), batched)
  # Each positive is credited the weight of negatives scoring below it plus half of those
  # tied with it: both are differences of one cumulative sum over the sorted negatives,
  # read at positions found once by binary search.
  pos_idx = np.flatnonzero(labels == 1)
  neg_idx = np.flatnonzero(labels == 0)
  neg_idx = neg_idx[np.argsort(scores[neg_idx], kind="mergesort")]
  neg_scores = scores[neg_idx]
  below = np.searchsorted(neg_scores, scores[pos_idx], side="left")
  not_above = np.searchsorted(neg_scores, scores[pos_idx], side="right")
  out = np.empty((w.shape[0],))
  step = max(1, _CHUNK_ELEMENTS // max(1, labels.shape[0]))
  for lo in range(0, w.shape[0], step):
    chunk = w[lo:lo + step]
    cum = np.zeros((chunk.shape[0], neg_idx.size + 1))
    np.cumsum(chunk[:, neg_idx], axis=1, out=cum[:, 1:])
    wp = chunk[:, pos_idx]
    num = (wp * (0.5 * (cum[:, below] + cum[:, not_above]))).sum(1)
    out[lo:lo + step] = _safe_divide(num, wp.sum(1) * cum[:, -1])
  return _unbatch(out, batched)


def roc_curve(labels: ArrayLike, scores: ArrayLike, sample_weight: Optional[ArrayLike] = None,
              drop_intermediate: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """ROC curve points, one per distinct score (descending), starting at (0, 0).

  Args:
    labels: ``[N]`` 0/1; scores: ``[N]``; sample_weight: optional ``[N]``.
    drop_intermediate: drop points collinear with both neighbours (same area, fewer
      points; useful for plotting).

  Returns:
    ``(fpr, tpr, thresholds)``; ``thresholds[0] = inf`` and point i counts examples with
    ``score >= thresholds[i]`` as positive. An axis whose class is absent is all NaN.
  """
  labels = np.asarray(labels, np.float64).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  if labels.shape != scores.shape:
    raise DataError(f"labels {labels.shape} and scores {scores.shape} differ in length")
  w = np.ones_like(labels) if sample_weight is None else np.asarray(sample_weight, np.float64)
  if w.shape != labels.shape:
    raise DataError(f"sample_weight must be [N]={labels.shape}, got {w.shape}")
  _check_binary_labels(labels, w > 0)
  _check_finite_scores(scores, w > 0)
  order = np.argsort(-scores, kind="mergesort")
  s, y, w = scores[order], labels[order], w[order]
  last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.shape[0] - 1] if s.size else np.zeros(0, int)
  tps = np.r_[0.0, np.cumsum(w * y)[last]]
  fps = np.r_[0.0, np.cumsum(w * (1.0 - y))[last]]
  thresholds = np.r_[np.inf, s[last]]
  if drop_intermediate and tps.shape[0] > 2:
    # Point i lies on the segment (i-1, i+1) iff the cross product of the two steps is 0.
    cross = ((fps[1:-1] - fps[:-2]) * (tps[2:] - tps[1:-1])
             - (tps[1:-1] - tps[:-2]) * (fps[2:] - fps[1:-1]))
    keep = np.r_[True, cross != 0, True]
    tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
  tpr = _safe_divide(tps, np.full_like(tps, tps[-1]))
  fpr = _safe_divide(fps, np.full_like(fps, fps[-1]))
  return fpr, tpr, thresholds


def per_class_auc(labels: ArrayLike, scores: ArrayLike, mask: Optional[ArrayLike] = None,
                  sample_weight: Optional[ArrayLike] = None):
  """One ROC AUC per column of a multi-label (or one-vs-rest) problem.

  Args:
    labels: ``[N, K]`` 0/1 (values where ``mask == 0`` are ignored, may be anything).
    scores: ``[N, K]``.
    mask: optional ``[N, K]``; entries with mask 0 are excluded from that class's AUC.
    sample_weight: optional ``[N]`` or ``[R, N]``.

  Returns:
    ``[K]`` (or ``[R, K]``) AUCs, NaN for classes without both classes present.
  """
  labels = np.asarray(labels, np.float64)
  scores = np.asarray(scores, np.float64)
  if labels.ndim == 1:
    labels = labels[:, None]
  if scores.ndim == 1:
    scores = scores[:, None]
  if labels.shape != scores.shape:
    raise DataError(f"labels {labels.shape} and scores {scores.shape} must have the same shape")
  n, k = labels.shape
  m = np.ones_like(labels) if mask is None else np.asarray(mask, np.float64).reshape(labels.shape)
  w, batched = _as_weights(sample_weight, n)
  out = np.empty((w.shape[0], k))
  for j in range(k):
    keep = m[:, j] > 0
    y = np.where(keep, labels[:, j], 0.0)
    out[:, j] = roc_auc(y[keep], scores[keep, j], w[:, keep] * m[keep, j][None, :])
  return _unbatch(out, batched)


# ------------------------------------------------------------------ accuracy, sens/spec


def _class_ids(targets: np.ndarray, num_classes: int) -> np.ndarray:
  if targets.ndim == 2:
    if targets.shape[1] != num_classes:
      raise DataError(f"one-hot targets have {targets.shape[1]} classes, scores {num_classes}")
    return targets.argmax(1)
  ids = targets.astype(np.int64)
  if ids.size and (ids.min() < 0 or ids.max() >= num_classes or (ids != targets).any()):
    raise DataError(f"class ids must be integers in [0, {num_classes}); got "
                    f"min {targets.min()} max {targets.max()}")
  return ids


def topk_accuracy(targets: ArrayLike, scores: ArrayLike, k: int,
                  sample_weight: Optional[ArrayLike] = None):
  """Fraction of examples whose true class is among the k highest scores.

  Args:
    targets: ``[N]`` integer class ids or ``[N, K]`` one-hot (argmax is the class).
    scores: ``[N, K]``.
    k: 1 <= k; k >= K gives 1.
    sample_weight: optional ``[N]`` or ``[R, N]``.

  Ties follow scikit-learn's ``top_k_accuracy_score``: classes are ranked by score, and
  among equal scores the higher class index ranks first, so the true class is within the
  top k when (classes scoring strictly higher) + (tied classes with a higher index) < k.
  Ties therefore never all count in the true class's favour (constant scores give the
  frequency of the last class, not 1). Rank logits, not float32 softmax probabilities,
  which underflow to tied zeros far from the top class.

  Returns:
    float (or ``[R]``); NaN when the total weight is 0.
  """
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2:
    raise DataError(f"scores must be [N, K], got shape {scores.shape}")
  if k < 1:
    raise ConfigError(f"top-k accuracy needs k >= 1, got {k}")
  ids = _class_ids(np.asarray(targets), scores.shape[1])
  if ids.shape[0] != scores.shape[0]:
    raise DataError(f"{ids.shape[0]} targets but {scores.shape[0]} score rows")
  true_score = scores[np.arange(ids.shape[0]), ids][:, None]
  tied_after = (scores == true_score) & (np.arange(scores.shape[1])[None, :] > ids[:, None])
  ahead = (scores > true_score).sum(1) + tied_after.sum(1)
  correct = (ahead < k).astype(np.float64)
  w, batched = _as_weights(sample_weight, ids.shape[0])
  return _unbatch(_safe_divide(w @ correct, w.sum(1)), batched)


def sensitivity_specificity(labels: ArrayLike, scores: ArrayLike, threshold: float,
                            sample_weight: Optional[ArrayLike] = None):
  """Sensitivity (TPR) and specificity (TNR) when ``score >= threshold`` means positive.

  Args:
    labels: ``[N]`` 0/1; scores: ``[N]``; threshold: operating point;
    sample_weight: optional ``[N]`` or ``[R, N]``.

  Returns:
    ``(sensitivity, specificity)`` floats (or ``[R]`` arrays), NaN when a class is absent.
  """
  labels = np.asarray(labels, np.float64).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  if labels.shape != scores.shape:
    raise DataError(f"labels {labels.shape} and scores {scores.shape} differ in length")
  w, batched = _as_weights(sample_weight, labels.shape[0])
  _check_binary_labels(labels, (w > 0).any(0))
  pred = (scores >= threshold).astype(np.float64)
  sens = _safe_divide(w @ (labels * pred), w @ labels)
  spec = _safe_divide(w @ ((1 - labels) * (1 - pred)), w @ (1 - labels))
  return _unbatch(sens, batched), _unbatch(spec, batched)


def threshold_at_sensitivity(labels: ArrayLike, scores: ArrayLike, target: float) -> float:
  """Largest threshold whose sensitivity (``score >= t`` positive) is >= ``target``.

  Choose it on a validation set and apply it to the test set. Candidates are the
  observed scores, so the returned value is one of the positives' scores. NaN when there
  are no positives.
  """
  if not 0.0 < target <= 1.0:
    raise ConfigError(f"target sensitivity must be in (0, 1], got {target}")
  labels = np.asarray(labels, np.float64).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  _check_binary_labels(labels, np.ones(labels.shape, bool))
  pos = np.sort(scores[labels == 1])[::-1]
  if pos.size == 0:
    return float("nan")
  # Taking the needed-th highest positive score keeps at least that many positives.
  needed = int(math.ceil(target * pos.size - 1e-12))
  return float(pos[max(needed, 1) - 1])


def threshold_at_specificity(labels: ArrayLike, scores: ArrayLike, target: float) -> float:
  """Smallest threshold whose specificity (``score < t`` negative) is >= ``target``.

  Choose it on a validation set. Candidates are the observed scores plus ``inf`` (the
  only way to reach specificity 1 when the highest score belongs to a negative). NaN when
  there are no negatives.
  """
  if not 0.0 < target <= 1.0:
    raise ConfigError(f"target specificity must be in (0, 1], got {target}")
  labels = np.asarray(labels, np.float64).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  _check_binary_labels(labels, np.ones(labels.shape, bool))
  neg = np.sort(scores[labels == 0])
  if neg.size == 0:
    return float("nan")
  candidates = np.r_[np.unique(scores), np.inf]
  spec = np.searchsorted(neg, candidates, side="left") / neg.size
  return float(candidates[np.flatnonzero(spec >= target - 1e-12)[0]])


def operating_thresholds(labels: ArrayLike, scores: ArrayLike, mask: Optional[ArrayLike] = None,
                         target_sensitivity: Optional[float] = None,
                         target_specificity: Optional[float] = None) -> np.ndarray:
  """Per-class thresholds ``[K]`` hitting a target sensitivity OR specificity.

  Meant for a validation set; pass the result as ``operating_point`` to
  :func:`evaluate_predictions` on the test set. Labels/scores ``[N, K]`` (or ``[N]``);
  masked entries are ignored.
  """
  if (target_sensitivity is None) == (target_specificity is None):
    raise ConfigError("give exactly one of target_sensitivity / target_specificity")
  labels = np.asarray(labels, np.float64)
  scores = np.asarray(scores, np.float64)
  if labels.ndim == 1:
    labels, scores = labels[:, None], scores.reshape(-1, 1)
  m = np.ones_like(labels) if mask is None else np.asarray(mask, np.float64).reshape(labels.shape)
  out = []
  for j in range(labels.shape[1]):
    keep = m[:, j] > 0
    if target_sensitivity is not None:
      out.append(threshold_at_sensitivity(labels[keep, j], scores[keep, j], target_sensitivity))
    else:
      out.append(threshold_at_specificity(labels[keep, j], scores[keep, j], target_specificity))
  return np.asarray(out)


# ---------------------------------------------------------------------------- bootstrap


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
  """Percentile-bootstrap summary of a metric (floats, or ``[M]`` arrays for vector metrics).

  Attributes:
    estimate: the metric on the full data (not the bootstrap mean).
    lower, upper: percentile interval bounds at ``confidence``.
    std: standard deviation of the defined resample values (the bootstrap SE).
    num_samples: resamples drawn.
    num_undefined: resamples where the metric was NaN (skipped in lower/upper/std).
    confidence: e.g. 0.95.
    unit: "patient" when whole patients were resampled, else "example".
  """
  estimate: Any
  lower: Any
  upper: Any
  std: Any
  num_samples: int
  num_undefined: Any
  confidence: float
  unit: str

  def component(self, i: int) -> "BootstrapResult":
    """Scalar result of component ``i`` of a vector metric."""
    pick = lambda v: float(np.asarray(v)[i])  # noqa: E731
    return dataclasses.replace(self, estimate=pick(self.estimate), lower=pick(self.lower),
                               upper=pick(self.upper), std=pick(self.std),
                               num_undefined=int(np.asarray(self.num_undefined)[i]))

  def to_dict(self) -> Dict[str, Any]:
    """JSON-friendly dict (NaN → None) of a scalar result."""
    return {"value": _json_float(self.estimate), "lower": _json_float(self.lower),
            "upper": _json_float(self.upper), "std": _json_float(self.std),
            "num_undefined": int(self.num_undefined)}


def _json_float(x) -> Optional[float]:
  x = float(x)
  return x if math.isfinite(x) else None


def _accepts_sample_weight(fn: Callable) -> bool:
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
  return "sample_weight" in params


def bootstrap_ci(metric_fn: Callable, *arrays: ArrayLike, groups: Optional[ArrayLike] = None,
                 num_samples: int = 1000, confidence: float = 0.95, seed: int = 0
                 ) -> BootstrapResult:
  """Percentile bootstrap confidence interval of ``metric_fn(*arrays)``.

  Args:
    metric_fn: maps the arrays (first axis N, all equal) to a float or an ``[M]`` vector.
      If it accepts ``sample_weight`` (``[R, N]`` → ``[R]`` / ``[R, M]``, like every
      metric in this module), resamples are evaluated as count weights in vectorised
      chunks; otherwise it is called once per resample on the resampled arrays.
    *arrays: the data, each with leading axis N.
    groups: optional ``[N]`` patient ids. When given, patients are resampled with
      replacement and each drawn patient brings all of its images (examples of one
      patient are correlated, so example resampling would understate the width).
    num_samples: number of resamples R.
    confidence: interval coverage in (0, 1).
    seed: RNG seed (same seed and data → same interval).

  Returns:
    :class:`BootstrapResult`. Resamples where the metric is NaN (e.g. a resample without
    positives) are skipped per component and counted in ``num_undefined``.
  """
  if not arrays:
    raise ConfigError("bootstrap_ci needs at least one data array")
  if not 0.0 < confidence < 1.0:
    raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
  if num_samples < 1:
    raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
  arrays = tuple(np.asarray(a) for a in arrays)
  n = arrays[0].shape[0]
  for i, a in enumerate(arrays):
    if a.shape[0] != n:
      raise DataError(f"bootstrap array {i} has {a.shape[0]} rows, array 0 has {n}")
  if groups is None:
    group_of = np.arange(n)
    num_groups = n
  else:
    groups = np.asarray(groups)
    if groups.shape[0] != n:
      raise DataError(f"groups has {groups.shape[0]} entries, data has {n}")
    _, group_of = np.unique(groups, return_inverse=True)
    group_of = group_of.ravel()
    num_groups = int(group_of.max()) + 1 if n else 0

  estimate = np.asarray(metric_fn(*arrays), np.float64)
  rng = np.random.default_rng(seed)
  vectorised = _accepts_sample_weight(metric_fn)
  step = max(1, _CHUNK_ELEMENTS // max(1, n, num_groups))
  values = []
  for lo in range(0, num_samples, step):
    r = min(step, num_samples - lo)
    draws = rng.integers(0, num_groups, size=(r, num_groups))
    flat = (draws + num_groups * np.arange(r)[:, None]).ravel()
    counts = np.bincount(flat, minlength=r * num_groups).reshape(r, num_groups)
    weights = counts[:, group_of].astype(np.float64)  # [r, N] times each example is drawn
    if vectorised:
      values.append(np.asarray(metric_fn(*arrays, sample_weight=weights), np.float64)
                    .reshape((r,) + estimate.shape))
    else:
      for row in weights.astype(np.int64):
        idx = np.repeat(np.arange(n), row)
        values.append(np.asarray(metric_fn(*(a[idx] for a in arrays)), np.float64)[None])
  values = np.concatenate(values, 0)
  finite = np.isfinite(values)
  num_undefined = (~finite).sum(0)
  alpha = (1.0 - confidence) / 2.0
  lower = np.full(estimate.shape, np.nan)
  upper = np.full(estimate.shape, np.nan)
  std = np.full(estimate.shape, np.nan)
  flat_vals = values.reshape(values.shape[0], -1)
  for j in range(flat_vals.shape[1]):
    v = flat_vals[:, j][np.isfinite(flat_vals[:, j])]
    if v.size:
      lower.flat[j], upper.flat[j] = np.percentile(v, [100 * alpha, 100 * (1 - alpha)])
      std.flat[j] = v.std(ddof=1) if v.size > 1 else 0.0
  unit = "patient" if groups is not None else "example"
  if estimate.ndim == 0:
    return BootstrapResult(float(estimate), float(lower), float(upper), float(std), num_samples,
                           int(num_undefined), confidence, unit)
  return BootstrapResult(estimate, lower, upper, std, num_samples, num_undefined, confidence,
                         unit)


# ----------------------------------------------------------------- task-level evaluation


def _mean_over_classes(auc: np.ndarray, classes: np.ndarray) -> np.ndarray:
  """Mean of ``auc [R, K]`` over the columns ``classes`` (bool ``[K]``); NaN in a row where
  any of them is NaN, so a resample missing a class is undefined (and counted as such)
  rather than silently averaged over fewer classes."""
  if not classes.any():
    return np.full(auc.shape[:1], np.nan)
  return auc[:, classes].mean(1)


def _binary_family_metrics(labels, scores, mask, thresholds, classes, sample_weight=None):
  """Vector [mean_auc, auc_1..K, sens_1..K, spec_1..K] (or [R, 1+3K]); the mean runs over
  the columns ``classes`` (bool ``[K]``)."""
  n, _ = labels.shape
  w, batched = _as_weights(sample_weight, n)
  auc = per_class_auc(labels, scores, mask, w)  # [R, K]
  y = np.where(mask > 0, labels, 0.0) * mask
  pred = (scores >= thresholds[None, :]).astype(np.float64)
  neg = (1.0 - np.where(mask > 0, labels, 1.0)) * mask
  sens = _safe_divide(w @ (y * pred), w @ y)
  spec = _safe_divide(w @ (neg * (1.0 - pred)), w @ neg)
  out = np.concatenate([_mean_over_classes(auc, classes)[:, None], auc, sens, spec], axis=1)
  return _unbatch(out, batched)


def softmax_log_odds(logits: ArrayLike) -> np.ndarray:
  """``log(p_j / (1 − p_j))`` of ``p = softmax(logits)`` over the last axis, float64.

  Equals ``z_j − logsumexp_{i≠j} z_i``: increasing in ``p_j`` (so the same ranks across
  examples, i.e. the same one-vs-rest AUC) and in ``z_j`` within a row (the same top-k),
  but it never saturates: float32 probabilities underflow to tied 0s and round to tied
  1s, and even float64 log-probabilities tie at 0 once the top class leads by ~37 nats.
  ``logits [N, K]`` with K >= 2 → ``[N, K]``.
  """
  z = np.asarray(logits, np.float64)
  top = z.max(-1, keepdims=True)
  log_p = z - (top + np.log(np.exp(z - top).sum(-1, keepdims=True)))
  with np.errstate(divide="ignore"):
    out = log_p - np.log1p(-np.exp(log_p))  # accurate wherever p_j <= 1/2
  # The leading class may have p near 1: exclude it explicitly instead of using 1 − p.
  rows = np.arange(z.shape[0])
  lead = z.argmax(-1)
  rest = z.copy()
  rest[rows, lead] = -np.inf
  rest_top = rest.max(-1)
  rest_lse = rest_top + np.log(np.exp(rest - rest_top[:, None]).sum(-1))
  out[rows, lead] = z[rows, lead] - rest_lse
  return out


def _multiclass_metrics(ids, scores, auc_scores, valid, ks, classes, sample_weight=None):
  """Vector [top-k for k in ks..., mean_auc, auc_1..K] (or [R, len(ks)+1+K]); top-k
  ranks ``scores``, the one-vs-rest AUCs rank ``auc_scores`` (both ``[N, K]``); the mean
  runs over the columns ``classes`` (bool ``[K]``)."""
  n, k = scores.shape
  w, batched = _as_weights(sample_weight, n)
  w = w * valid[None, :]
  accs = [np.atleast_1d(topk_accuracy(ids, scores, kk, w)) for kk in ks]
  onehot = np.eye(k)[ids]
  auc = per_class_auc(onehot, auc_scores, None, w)
  out = np.concatenate([np.stack(accs, 1), _mean_over_classes(auc, classes)[:, None], auc],
                       axis=1)
  return _unbatch(out, batched)


def _resolve_thresholds(operating_point, label_names: Sequence[str]) -> np.ndarray:
  k = len(label_names)
  if isinstance(operating_point, Mapping):
    missing = [n for n in label_names if n not in operating_point]
    if missing:
      raise ConfigError(f"operating_point has no threshold for class {missing[0]!r}")
    return np.asarray([float(operating_point[n]) for n in label_names])
  t = np.asarray(operating_point, np.float64)
  if t.ndim == 0:
    return np.full((k,), float(t))
  if t.shape != (k,):
    raise ConfigError(f"operating_point needs 1 or {k} thresholds, got {t.shape[0]}")
  return t


def evaluate_predictions(task: str, labels: ArrayLike, scores: ArrayLike,
                         mask: Optional[ArrayLike] = None, patients: Optional[ArrayLike] = None,
                         label_names: Optional[Sequence[str]] = None,
                         operating_point: Union[float, Sequence[float], Mapping[str, float]] = 0.5,
                         num_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                         topk: Sequence[int] = (1, 3), logits: Optional[ArrayLike] = None
                         ) -> Dict[str, Any]:
  """Computes a task's metrics with bootstrap CIs (one shared set of resamples).

  Args:
    task: "multilabel", "binary" or "multiclass".
    labels: multilabel/binary ``[N, K]`` 0/1 (binary may be ``[N]``); multiclass ``[N]``
      ids or ``[N, K]`` one-hot.
    scores: ``[N, K]`` (binary may be ``[N]``): probabilities or logits. The operating
      point thresholds are compared to these, so they must be on the same scale.
    mask: optional ``[N, K]`` (multiclass: a row is used when any entry is > 0).
    patients: optional ``[N]`` patient ids → patient-level bootstrap.
    label_names: K names (default ``class_0..``).
    operating_point: threshold(s) for sensitivity/specificity: one float, K floats, or
      ``{name: threshold}`` (see :func:`operating_thresholds` to pick them on validation).
    num_bootstrap: resamples (0 → no CI; lower/upper/std are then None).
    confidence, seed: bootstrap settings.
    topk: accuracies reported for multiclass (k larger than K is clipped to K).
    logits: optional ``[N, K]`` multiclass logits. When given, the multiclass ranks come
      from them instead of ``scores``: top-k from the logits, one-vs-rest AUC from
      :func:`softmax_log_odds` (the same ranks as the probabilities in exact arithmetic).
      Float32 softmax probabilities underflow to tied zeros (and round to tied ones), and
      ties make top-k depend on the class order. Ignored for multilabel/binary.

  Returns:
    A JSON-friendly dict (NaN → None)::

      {"task": str, "num_examples": int, "num_patients": int | None,
       "bootstrap": {"num_samples": int, "confidence": float, "unit": "patient"|"example",
                     "seed": int},
       "metrics": {name: CI},            # multilabel/binary: "mean_auc";
                                         # multiclass: "top1_accuracy", "top3_accuracy",
                                         #             "mean_auc" (one-vs-rest macro)
       "per_class": {label_name: {"auc": CI, "num_positive": int, "num_negative": int,
                                  # multilabel/binary only:
                                  "sensitivity": CI, "specificity": CI,
                                  "threshold": float}},
       "mean_auc_classes": [label_name, ...],          # the classes mean_auc averages
       "mean_auc_excluded_classes": [label_name, ...]}  # AUC undefined on the full set

    where ``CI = {"value", "lower", "upper", "std", "num_undefined"}``.

    ``mean_auc`` averages the classes whose AUC is defined on the full set. A bootstrap
    resample in which any of them is undefined (a rare class drawn without positives or
    without negatives) gives no mean-AUC value: it is left out of the interval and counted
    in ``mean_auc.num_undefined`` (never averaged over fewer classes, which would mix
    different statistics). The interval is therefore conditional on every class being
    present; a large ``num_undefined`` says the test set is too small for that class.
  """
  if task not in TASKS:
    raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
  scores = np.asarray(scores, np.float64)
  if scores.ndim == 1:
    scores = scores[:, None]
  n, k = scores.shape
  labels = np.asarray(labels, np.float64)
  if task == "multiclass" and labels.ndim == 1:
    if labels.shape[0] != n:
      raise DataError(f"{labels.shape[0]} labels but {n} score rows")
  else:
    labels = labels.reshape(labels.shape[0], -1) if labels.ndim == 1 else labels
    if labels.shape != (n, k):
      raise DataError(f"labels shape {labels.shape} does not match scores shape {(n, k)}")
  m = np.ones((n, k)) if mask is None else np.asarray(mask, np.float64).reshape(n, -1)
  if m.shape[0] != n:
    raise DataError(f"mask has {m.shape[0]} rows, scores {n}")
  names = list(label_names) if label_names is not None else [f"class_{j}" for j in range(k)]
  if len(names) != k:
    raise ConfigError(f"{len(names)} label_names for {k} score columns")
  if patients is not None and np.asarray(patients).shape[0] != n:
    raise DataError(f"patients has {np.asarray(patients).shape[0]} entries, scores {n}")

  def summarize(fn, *arrays):
    if num_bootstrap > 0:
      return bootstrap_ci(fn, *arrays, groups=patients, num_samples=num_bootstrap,
                          confidence=confidence, seed=seed)
    est = np.asarray(fn(*arrays), np.float64)
    nan = np.full(est.shape, np.nan)
    return BootstrapResult(est, nan, nan, nan, 0, np.zeros(est.shape, int), confidence,
                           "patient" if patients is not None else "example")

  result: Dict[str, Any] = {
      "task": task, "num_examples": int(n),
      "num_patients": None if patients is None else int(np.unique(np.asarray(patients)).size),
      "bootstrap": {"num_samples": int(num_bootstrap), "confidence": float(confidence),
                    "unit": "patient" if patients is not None else "example", "seed": int(seed)},
      "metrics": {}, "per_class": {}}

  if task == "multiclass":
    ids = _class_ids(labels, k)
    if logits is not None:
      logits = np.asarray(logits, np.float64)
      if logits.shape != (n, k):
        raise DataError(f"logits shape {logits.shape} does not match scores shape {(n, k)}")
    rank_scores = scores if logits is None else logits
    auc_scores = scores if logits is None or k < 2 else softmax_log_odds(logits)
    valid = (m > 0).any(1).astype(np.float64)
    ks = sorted({min(int(kk), k) for kk in topk})
    classes = np.isfinite(per_class_auc(np.eye(k)[ids], auc_scores, None, valid))
    _note_classes(result, names, classes)
    fn = lambda i, s, a, v, sample_weight=None: _multiclass_metrics(  # noqa: E731
        i, s, a, v, ks, classes, sample_weight)
    res = summarize(fn, ids, rank_scores, auc_scores, valid)
    for j, kk in enumerate(ks):
      result["metrics"][f"top{kk}_accuracy"] = res.component(j).to_dict()
    result["metrics"]["mean_auc"] = res.component(len(ks)).to_dict()
    for j, name in enumerate(names):
      result["per_class"][name] = {
          "auc": res.component(len(ks) + 1 + j).to_dict(),
          "num_positive": int(((ids == j) & (valid > 0)).sum()),
          "num_negative": int(((ids != j) & (valid > 0)).sum())}
    return result

  used = m > 0
  _check_binary_labels(labels, used)
  thresholds = _resolve_thresholds(operating_point, names)
  clean = np.where(used, labels, 0.0)
  classes = np.isfinite(per_class_auc(clean, scores, m))
  _note_classes(result, names, classes)
  fn = lambda y, s, mm, sample_weight=None: _binary_family_metrics(  # noqa: E731
      y, s, mm, thresholds, classes, sample_weight)
  res = summarize(fn, clean, scores, m)
  result["metrics"]["mean_auc"] = res.component(0).to_dict()
  for j, name in enumerate(names):
    result["per_class"][name] = {
        "auc": res.component(1 + j).to_dict(),
        "sensitivity": res.component(1 + k + j).to_dict(),
        "specificity": res.component(1 + 2 * k + j).to_dict(),
        "threshold": _json_float(thresholds[j]),
        "num_positive": int((used[:, j] & (labels[:, j] == 1)).sum()),
        "num_negative": int((used[:, j] & (labels[:, j] == 0)).sum())}
  return result


def _note_classes(result: Dict[str, Any], names: Sequence[str], classes: np.ndarray) -> None:
  """Records which classes ``mean_auc`` averages (those whose AUC is defined on the full
  set) and which are left out (no positive or no negative there)."""
  result["mean_auc_classes"] = [n for n, c in zip(names, classes) if c]
  result["mean_auc_excluded_classes"] = [n for n, c in zip(names, classes) if not c]


CSV_COLUMNS = ("metric", "class", "value", "lower", "upper", "std", "num_undefined")


def metrics_rows(result: Mapping[str, Any]) -> List[Dict[str, Any]]:
  """Flattens an :func:`evaluate_predictions` dict into rows with ``CSV_COLUMNS``."""
  rows = []
  for name, ci in result.get("metrics", {}).items():
    rows.append({"metric": name, "class": "", **ci})
  for cls, entry in result.get("per_class", {}).items():
    for name, ci in entry.items():
      if isinstance(ci, Mapping):
        rows.append({"metric": name, "class": cls, **ci})
  return rows


def write_metrics(result: Mapping[str, Any], json_path: str, csv_path: str) -> None:
  """Writes ``result`` as JSON and as a flat CSV (one row per metric × class), atomically."""
  io_utils.atomic_write_json(json_path, result)
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
  writer.writeheader()
  for row in metrics_rows(result):
    writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in CSV_COLUMNS})
  io_utils.atomic_write_text(csv_path, buf.getvalue())
