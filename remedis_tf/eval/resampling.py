"""Intervals that combine seed and test-set variation (a two-level bootstrap).

A comparison of fine-tuned models has two sources of noise: the training seed (subset,
initialisation of the head, data order) and the finite test set. Each bootstrap replicate
here draws both:

1. test patients with replacement (one draw shared by every cell, so comparisons between
   models/fractions are paired), as count weights ``[R, N]`` (:func:`patient_weights`);
2. the seeds with replacement (one draw per replicate, shared by every (model, fraction));

and the replicate value of a (model, fraction) is the mean over the drawn seeds of that
seed's metric on the drawn patients. Percentile intervals of these replicate means are the
intervals reported; any statistic of the whole table (e.g. the data-efficiency headline
fraction) is recomputed on every replicate table for its interval
(:func:`headline_interval`).

A metric that is undefined on a replicate (e.g. a finding without positives among the
drawn patients) makes that replicate undefined for the cell; such replicates are counted
(``num_undefined``), never averaged over fewer classes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import data_efficiency as de
from remedis_tf.eval import metrics, task_metrics

CellKey = Tuple[str, float, int]  # (model, fraction, seed)


def mean_auc_all_classes(labels, scores, mask, sample_weight=None):
  """Mean ROC AUC over all K columns (``[R]`` with ``[R, N]`` weights); NaN wherever any
  column is undefined."""
  aucs = metrics.per_class_auc(labels, scores, mask, sample_weight=sample_weight)
  return np.mean(aucs, axis=-1)


def top1_accuracy(labels, scores, mask, sample_weight=None):
  """Top-1 accuracy of one-hot ``labels`` (mask unused), vectorised over weight rows."""
  del mask
  return metrics.topk_accuracy(labels, scores, 1, sample_weight=sample_weight)


def metric_for(task: str) -> Tuple[str, Callable]:
  """``(name, fn)`` of the headline metric of ``task`` (``task_metrics.default_metric``):
  top-1 accuracy for multi-class, mean AUC over all findings otherwise."""
  name = task_metrics.default_metric(task)
  return name, {"top1_accuracy": top1_accuracy, "mean_auc": mean_auc_all_classes}[name]


def patient_weights(patients: Sequence, num_samples: int, seed: int = 0) -> np.ndarray:
  """``[R, N]`` float64 count weights: patients drawn with replacement (each draw brings
  all of the patient's images). Same ``patients`` order and seed → same weights."""
  if num_samples < 1:
    raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
  patients = np.asarray(patients)
  if patients.size == 0:
    raise DataError("no test examples to resample")
  _, group = np.unique(patients, return_inverse=True)
  group = group.ravel()
  g = int(group.max()) + 1
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, g, size=(num_samples, g))
  counts = np.stack([np.bincount(row, minlength=g) for row in draws])
  return counts[:, group].astype(np.float64)


@dataclasses.dataclass(frozen=True)
class CombinedRow:
  """One (model, fraction) summarised over seeds and test patients.

  Attributes:
    mean: mean over seeds of the metric on the full test set.
    lower, upper: percentile interval of the replicate means (seeds and test patients
      resampled together); NaN if no replicate is defined.
    per_seed: seed → metric on the full test set.
    num_undefined: replicates where the metric was undefined (excluded).
    std: standard deviation of the defined replicate means.
  """
  model: str
  fraction: float
  mean: float
  lower: float
  upper: float
  std: float
  num_seeds: int
  per_seed: Dict[int, float]
  num_undefined: int
  num_samples: int
  confidence: float
  n_train: Optional[float] = None

  def to_aggregate(self) -> de.AggregateRow:
    """As a :class:`remedis_tf.eval.data_efficiency.AggregateRow` (tables, plots)."""
    return de.AggregateRow(self.model, self.fraction, self.mean, self.std, self.lower,
                           self.upper, self.num_seeds, self.n_train, self.confidence,
                           interval="bootstrap")


@dataclasses.dataclass
class Replicates:
  """Point values and replicate values of every cell, plus the seed draws.

  ``point[key]``: metric of cell ``key`` on the full test set; ``values[key]``: ``[R]``
  metric under the shared patient weights; ``seed_draws``: ``[R, S]`` indices into
  ``seeds`` (one seed resample per replicate).
  """
  point: Dict[CellKey, float]
  values: Dict[CellKey, np.ndarray]
  seeds: Tuple[int, ...]
  seed_draws: np.ndarray

  def cells(self) -> List[Tuple[str, float]]:
    return sorted({(m, f) for m, f, _ in self.point}, key=lambda c: (c[0], c[1]))

  def replicate_means(self, model: str, fraction: float) -> np.ndarray:
    """``[R]``: mean over each replicate's drawn seeds (NaN if any drawn value is)."""
    stack = np.stack([self.values[(model, fraction, s)] for s in self.seeds], axis=1)
    return np.take_along_axis(stack, self.seed_draws, axis=1).mean(axis=1)

  def point_mean(self, model: str, fraction: float) -> float:
    return float(np.mean([self.point[(model, fraction, s)] for s in self.seeds]))


def replicates(scores: Mapping[CellKey, np.ndarray], labels: np.ndarray, mask: np.ndarray,
               patients: Sequence, task: str, num_samples: int = 1000,
               seed: int = 0) -> Replicates:
  """Metric of every cell on the full test set and on ``num_samples`` shared resamples.

  Args:
    scores: ``{(model, fraction, seed): [N, K] test scores}``; every (model, fraction)
      must have the same seeds, every array the same N test images (same order).
    labels, mask: ``[N, K]`` test labels and mask; patients: ``[N]`` ids.
    task: ``multilabel`` | ``binary`` | ``multiclass`` (picks the metric, see
      :func:`metric_for`).
    num_samples: replicates R; seed: RNG seed of patient and seed draws.
  """
  if not scores:
    raise ConfigError("no cells to resample")
  seeds = tuple(sorted({k[2] for k in scores}))
  for model, fraction in {(k[0], k[1]) for k in scores}:
    have = tuple(sorted(s for m, f, s in scores if m == model and f == fraction))
    if have != seeds:
      raise DataError(f"{model} at fraction {fraction:g} has seeds {list(have)}, other cells "
                      f"have {list(seeds)}; the seed bootstrap needs the same seeds everywhere")
  _, fn = metric_for(task)
  weights = patient_weights(patients, num_samples, seed)
  point, values = {}, {}
  for key, s in scores.items():
    s = np.asarray(s, np.float64)
    if s.shape != np.asarray(labels).shape:
      raise DataError(f"scores of {key} have shape {s.shape}, labels {np.asarray(labels).shape}")
    point[key] = float(fn(labels, s, mask))
    values[key] = np.asarray(fn(labels, s, mask, sample_weight=weights), np.float64)
  rng = np.random.default_rng([seed, 1])
  draws = rng.integers(0, len(seeds), size=(num_samples, len(seeds)))
  return Replicates(point, values, seeds, draws)


def _percentiles(v: np.ndarray, confidence: float) -> Tuple[float, float, float]:
  v = v[np.isfinite(v)]
  if not v.size:
    return math.nan, math.nan, math.nan
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.percentile(v, [100 * alpha, 100 * (1 - alpha)])
  return float(lo), float(hi), float(v.std(ddof=1)) if v.size > 1 else 0.0


def combined_rows(reps: Replicates, confidence: float = 0.95,
                  n_train: Optional[Mapping[Tuple[str, float], float]] = None
                  ) -> List[CombinedRow]:
  """One :class:`CombinedRow` per (model, fraction), sorted by model then fraction."""
  rows = []
  for model, fraction in reps.cells():
    v = reps.replicate_means(model, fraction)
    lo, hi, std = _percentiles(v, confidence)
    rows.append(CombinedRow(
        model, fraction, reps.point_mean(model, fraction), lo, hi, std, len(reps.seeds),
        {s: reps.point[(model, fraction, s)] for s in reps.seeds},
        int((~np.isfinite(v)).sum()), int(v.size), confidence,
        None if n_train is None else n_train.get((model, fraction))))
  return rows


def headline_interval(reps: Replicates, reference_model: str = "baseline",
                      candidate_model: str = "remedis", reference_fraction: float = 1.0,
                      confidence: float = 0.95, higher_is_better: bool = True) -> Dict:
  """Interval of the data-efficiency headline fraction (the whole rule re-run per replicate).

  On every replicate the table of replicate means goes through
  :func:`remedis_tf.eval.data_efficiency.headline_fraction`; its interpolated fraction
  (``inf`` when the candidate never reaches the reference) is collected. The interval is
  the order statistics at ``(1 ± confidence) / 2``; an upper end of ``inf`` means the
  candidate fails to reach the reference in more than ``(1 - confidence) / 2`` of the
  replicates. Replicates with an undefined cell are skipped (counted).

  Returns:
    ``{"point": Headline dict of the point table, "lower", "upper" (None for inf),
    "upper_not_reached": bool, "num_not_reached", "num_undefined", "num_samples",
    "confidence", "method"}``.
  """
  cells = reps.cells()
  point_table = [de.AggregateRow(m, f, reps.point_mean(m, f), math.nan, math.nan, math.nan,
                                 len(reps.seeds)) for m, f in cells]
  point = de.headline_fraction(point_table, reference_model, candidate_model,
                               reference_fraction, higher_is_better)
  means = {c: reps.replicate_means(*c) for c in cells}
  num = reps.seed_draws.shape[0]
  found, undefined = [], 0
  for r in range(num):
    table = [de.AggregateRow(m, f, float(means[(m, f)][r]), math.nan, math.nan, math.nan,
                             len(reps.seeds)) for m, f in cells]
    if not all(math.isfinite(row.mean) for row in table):
      undefined += 1
      continue
    h = de.headline_fraction(table, reference_model, candidate_model, reference_fraction,
                             higher_is_better)
    found.append(h.interpolated_fraction if h.reached else math.inf)
  found = np.sort(np.asarray(found, np.float64))
  alpha = (1.0 - confidence) / 2.0
  lower = upper = math.nan
  if found.size:
    lower = float(found[int(math.floor(alpha * (found.size - 1)))])
    upper = float(found[int(math.ceil((1 - alpha) * (found.size - 1)))])
  return {"point": point.to_dict(), "lower": lower if math.isfinite(lower) else None,
          "upper": upper if math.isfinite(upper) else None,
          "upper_not_reached": bool(upper == math.inf),
          "num_not_reached": int(np.isinf(found).sum()), "num_undefined": undefined,
          "num_samples": num, "confidence": confidence,
          "method": (f"{num} replicates drawing test patients and seeds with replacement; "
                     "the headline rule applied to each replicate's table of seed means; "
                     f"{100 * confidence:g}% order-statistic interval of the interpolated "
                     "fraction (not reached = infinite)")}


def format_headline(h: Mapping) -> str:
  """One sentence: the point rule, then the interval."""
  point = h["point"]["summary"]
  pct = lambda f: f"{100 * f:.3g}%"  # noqa: E731
  if h["lower"] is None and not h["upper_not_reached"]:
    return f"{point}. Interval: undefined (no defined replicate)."
  lo = pct(h["lower"]) if h["lower"] is not None else "not reached"
  hi = ("not reached within the measured fractions" if h["upper_not_reached"]
        else pct(h["upper"]))
  return (f"{point}. {100 * h['confidence']:g}% interval of the interpolated fraction over "
          f"test patients and seeds: [{lo}, {hi}] ({h['num_not_reached']} of "
          f"{h['num_samples'] - h['num_undefined']} replicates never reach it).")
