"""kNN monitor: how well frozen embeddings separate labels, without training a head.

Weighted k-nearest-neighbour classification on cosine similarity (the InstDisc / SSL-library
convention: neighbour weight ``exp(sim / T)``), leave-one-patient-out: a query never uses
images of its own patient as neighbours, so one labelled set serves as bank and queries.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from remedis_tf.errors import DataError
from remedis_tf.eval import metrics


def knn_scores(embeddings: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray],
               patients: np.ndarray, k: int = 20, temperature: float = 0.07,
               chunk: int = 1024) -> np.ndarray:
  """Leave-one-patient-out weighted kNN label scores.

  Args:
    embeddings: ``[N, C]`` features (l2-normalised here).
    labels: ``[N, K]`` 0/1 (multi-label/binary) or one-hot (multi-class).
    mask: ``[N, K]`` label mask (1 = known) or None.
    patients: ``[N]`` patient keys; neighbours sharing the query's key are excluded.
    k: neighbours per query.
    temperature: similarity temperature of the neighbour weights.
  Returns:
    float64 ``[N, K]``: for each query, the weighted mean over its k neighbours of their
    (known) labels; NaN where no neighbour knows that label.
  """
  x = np.asarray(embeddings, np.float64)
  n = x.shape[0]
  if n < 2:
    raise DataError(f"kNN needs at least 2 examples, got {n}")
  patients = np.asarray(patients)
  return _weighted_knn(x, x, labels, mask, min(k, n - 1), temperature, chunk,
                       exclude=lambda lo, hi: patients[lo:hi, None] == patients[None, :])


def knn_bank_scores(queries: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray,
                    bank_mask: Optional[np.ndarray], k: int = 20, temperature: float = 0.07,
                    chunk: int = 1024) -> np.ndarray:
  """Weighted kNN label scores of ``queries [Q, C]`` from a labelled ``bank [N, C]``.

  Same weights and output as :func:`knn_scores` (``[Q, K]`` float64, NaN where no
  neighbour knows a label), but every bank item may be a neighbour: use it when queries
  and bank are disjoint sets (e.g. test images against the train set).
  """
  bank = np.asarray(bank, np.float64)
  queries = np.asarray(queries, np.float64)
  if bank.shape[0] < 1 or queries.ndim != 2 or bank.ndim != 2 or (
      queries.shape[1] != bank.shape[1]):
    raise DataError(f"kNN needs [Q, C] queries and a non-empty [N, C] bank, got "
                    f"{queries.shape} and {bank.shape}")
  return _weighted_knn(queries, bank, bank_labels, bank_mask, min(k, bank.shape[0]),
                       temperature, chunk, exclude=None)


def _weighted_knn(q, x, labels, mask, k, temperature, chunk, exclude):
  """Shared core: l2-normalise, top-k cosine neighbours of each query row, weighted label
  mean; ``exclude(lo, hi)`` → ``[hi-lo, N]`` bool of bank items a query may not use."""
  normalise = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
  q, x = normalise(q), normalise(x)
  y = np.asarray(labels, np.float64)
  m = np.ones_like(y) if mask is None else np.asarray(mask, np.float64)
  out = np.empty((q.shape[0], y.shape[1]))
  for start in range(0, q.shape[0], chunk):
    sims = q[start:start + chunk] @ x.T
    if exclude is not None:
      sims[exclude(start, start + sims.shape[0])] = -np.inf
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(sims, idx, axis=1)
    weights = np.where(np.isfinite(top), np.exp((top - 1.0) / temperature), 0.0)
    wm = weights[:, :, None] * m[idx]
    num = (wm * y[idx]).sum(axis=1)
    den = wm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
      out[start:start + chunk] = np.where(den > 0, num / den, np.nan)
  return out


def knn_monitor_metrics(task: str, embeddings: np.ndarray, labels: np.ndarray,
                        mask: Optional[np.ndarray], patients: np.ndarray, k: int = 20,
                        temperature: float = 0.07) -> Dict[str, float]:
  """``{"knn_mean_auc": ...}`` (multi-label/binary) or ``{"knn_top1_accuracy": ...}``."""
  scores = knn_scores(embeddings, labels, mask, patients, k, temperature)
  if task == "multiclass":
    # Vote fractions tie often (few neighbours): the same tie rule as every top-k here.
    valid = ~np.isnan(scores).any(axis=1)
    if not valid.any():
      return {"knn_top1_accuracy": float("nan")}
    return {"knn_top1_accuracy": float(metrics.topk_accuracy(
        np.asarray(labels)[valid], scores[valid], 1))}
  use = (np.ones_like(labels) if mask is None else np.asarray(mask)) * ~np.isnan(scores)
  aucs = metrics.per_class_auc(labels, np.nan_to_num(scores), use)
  return {"knn_mean_auc": float(np.nanmean(aucs)) if np.isfinite(aucs).any()
          else float("nan")}
