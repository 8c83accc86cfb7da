"""Per-class metrics (pure numpy): ROC AUC and curve, top-k accuracy, softmax log-odds.

Inputs are numpy arrays (or anything ``np.asarray`` accepts), never tensors.

Every metric takes an optional ``sample_weight``: shape ``[N]`` gives one weighted value,
shape ``[R, N]`` gives ``R`` values at once (leading axis ``R``). The bootstrap
(:mod:`remedis_tf.eval.bootstrap`) expresses a resample as integer weights (how many times
each example was drawn), so metrics that accept ``sample_weight`` are bootstrapped in a
few vectorised passes instead of ``R`` Python calls. The helpers that implement this
contract (:func:`as_weights`, :func:`unbatch`, the label/score checks) are shared by the
other metric modules: :mod:`remedis_tf.eval.thresholds` (sensitivity/specificity and
operating points) and :mod:`remedis_tf.eval.task_metrics` (a task's metrics with CIs).

AUC follows the Mann-Whitney form: a positive/negative pair with tied scores counts 1/2,
which is exactly the trapezoidal area under the ROC curve that scikit-learn computes.
Undefined values (a single class present, nothing unmasked) are NaN, never an exception.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from remedis_tf.errors import ConfigError, DataError

ArrayLike = Any
# Bound on R*N floats per vectorised chunk (keeps memory near 100 MB for R=1000, N=5k).
CHUNK_ELEMENTS = 2_000_000


# -------------------------------------------- weights and checks (shared by eval metrics)


def as_weights(sample_weight: Optional[ArrayLike], n: int) -> Tuple[np.ndarray, bool]:
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


def unbatch(values: np.ndarray, batched: bool):
  """Drops the leading resample axis of an unbatched result; 0-d results become float."""
  if batched:
    return values
  out = values[0]
  return float(out) if np.ndim(out) == 0 else out


def check_binary_labels(labels: np.ndarray, valid: np.ndarray, what: str = "labels"):
  """DataError unless ``labels`` is 0/1 wherever ``valid`` (same shape, bool) is set."""
  bad = valid & ~((labels == 0) | (labels == 1))
  if bad.any():
    i = int(np.flatnonzero(bad.ravel())[0])
    raise DataError(f"{what} must be 0/1 where used; found {labels.ravel()[i]!r} at flat index {i}")


def check_finite_scores(scores: np.ndarray, valid: np.ndarray):
  """DataError unless ``scores`` is finite wherever ``valid`` (same shape, bool) is set."""
  bad = valid & ~np.isfinite(scores)
  if bad.any():
    i = int(np.flatnonzero(bad.ravel())[0])
    raise DataError(f"scores must be finite; found {scores.ravel()[i]!r} at flat index {i}")


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
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
  w, batched = as_weights(sample_weight, labels.shape[0])
  used = (w > 0).any(0)
  check_binary_labels(labels, used)
  check_finite_scores(scores, used)
  if labels.shape[0] == 0:
    return unbatch(np.full((w.shape[0],), np.nan), batched)
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
  step = max(1, CHUNK_ELEMENTS // max(1, labels.shape[0]))
  for lo in range(0, w.shape[0], step):
    chunk = w[lo:lo + step]
    cum = np.zeros((chunk.shape[0], neg_idx.size + 1))
    np.cumsum(chunk[:, neg_idx], axis=1, out=cum[:, 1:])
    wp = chunk[:, pos_idx]
    num = (wp * (0.5 * (cum[:, below] + cum[:, not_above]))).sum(1)
    out[lo:lo + step] = safe_divide(num, wp.sum(1) * cum[:, -1])
  return unbatch(out, batched)


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
  check_binary_labels(labels, w > 0)
  check_finite_scores(scores, w > 0)
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
  tpr = safe_divide(tps, np.full_like(tps, tps[-1]))
  fpr = safe_divide(fps, np.full_like(fps, fps[-1]))
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
  w, batched = as_weights(sample_weight, n)
  out = np.empty((w.shape[0], k))
  for j in range(k):
    keep = m[:, j] > 0
    y = np.where(keep, labels[:, j], 0.0)
    out[:, j] = roc_auc(y[keep], scores[keep, j], w[:, keep] * m[keep, j][None, :])
  return unbatch(out, batched)


# ---------------------------------------------------------------------- top-k accuracy


def class_ids(targets: np.ndarray, num_classes: int) -> np.ndarray:
  """``[N]`` int class ids from ``[N]`` integer ids or ``[N, K]`` one-hot (argmax)."""
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
  ids = class_ids(np.asarray(targets), scores.shape[1])
  if ids.shape[0] != scores.shape[0]:
    raise DataError(f"{ids.shape[0]} targets but {scores.shape[0]} score rows")
  true_score = scores[np.arange(ids.shape[0]), ids][:, None]
  tied_after = (scores == true_score) & (np.arange(scores.shape[1])[None, :] > ids[:, None])
  ahead = (scores > true_score).sum(1) + tied_after.sum(1)
  correct = (ahead < k).astype(np.float64)
  w, batched = as_weights(sample_weight, ids.shape[0])
  return unbatch(safe_divide(w @ correct, w.sum(1)), batched)


# -------------------------------------------------------------------- softmax log-odds


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
