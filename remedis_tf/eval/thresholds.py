"""Operating points: the threshold behind sensitivity/specificity, chosen per class.

``score >= threshold`` counts as positive. Rules (:class:`OperatingPoint`, parsed from text
by :func:`parse_operating_point`), applied per class on a validation set by
:func:`choose_thresholds`:

* ``"youden"`` — the threshold maximising Youden's J = sensitivity + specificity − 1 on
  the ROC curve (ties → the highest such threshold, i.e. the most specific operating
  point; :func:`youden_threshold`);
* ``"sensitivity:0.9"`` — the largest threshold whose sensitivity is ≥ 0.9 (screening
  use; :func:`threshold_at_sensitivity`); ``"specificity:0.9"`` likewise for specificity
  (:func:`threshold_at_specificity`);
* a number such as ``"0.5"`` — that fixed threshold for every class (no validation set
  needed).

Pass the chosen thresholds as ``operating_point`` to
:func:`remedis_tf.eval.task_metrics.evaluate_predictions` on the test set; the validation
set's own sensitivity/specificity at a threshold chosen on it are optimistic.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval.metrics import ArrayLike, check_binary_labels, roc_curve

RULES = ("youden", "sensitivity", "specificity", "fixed")


# ------------------------------------------------------------- sensitivity / specificity


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
  check_binary_labels(labels, np.ones(labels.shape, bool))
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
  check_binary_labels(labels, np.ones(labels.shape, bool))
  neg = np.sort(scores[labels == 0])
  if neg.size == 0:
    return float("nan")
  candidates = np.r_[np.unique(scores), np.inf]
  spec = np.searchsorted(neg, candidates, side="left") / neg.size
  return float(candidates[np.flatnonzero(spec >= target - 1e-12)[0]])


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
  """Threshold maximising sensitivity + specificity − 1 (``score >= t`` is positive).

  Ties go to the highest threshold. NaN when a class is absent.
  """
  labels = np.asarray(labels, np.float64).ravel()
  if labels.size == 0 or labels.min() == labels.max():
    return float("nan")
  fpr, tpr, thresholds = roc_curve(labels, scores)
  j = tpr - fpr
  best = int(np.argmax(j[1:])) + 1  # point 0 is the "nothing positive" corner (t = inf)
  return float(thresholds[best])


# --------------------------------------------------------------------- operating points


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
  """How the sensitivity/specificity threshold is chosen (see the module docstring).

  Attributes:
    rule: ``youden`` | ``sensitivity`` | ``specificity`` | ``fixed``.
    value: target sensitivity/specificity in (0, 1], or the fixed threshold.
  """
  rule: str = "youden"
  value: Optional[float] = None

  def describe(self) -> str:
    if self.rule == "youden":
      return "youden"
    return f"{self.rule}:{self.value:g}" if self.rule != "fixed" else f"{self.value:g}"


def parse_operating_point(spec: Any) -> OperatingPoint:
  """``"youden"``, ``"sensitivity:0.9"`` (``sens:``), ``"specificity:0.9"`` (``spec:``), or
  a number (fixed threshold) → :class:`OperatingPoint`."""
  if isinstance(spec, OperatingPoint):
    return spec
  if isinstance(spec, (int, float)) and not isinstance(spec, bool):
    return OperatingPoint("fixed", float(spec))
  text = str(spec).strip().lower()
  if text == "youden":
    return OperatingPoint("youden")
  rule, sep, value = text.partition(":")
  aliases = {"sens": "sensitivity", "sensitivity": "sensitivity", "spec": "specificity",
             "specificity": "specificity"}
  try:
    if sep and rule in aliases:
      target = float(value)
      if not 0.0 < target <= 1.0:
        raise ValueError
      return OperatingPoint(aliases[rule], target)
    if not sep:
      threshold = float(text)
      if math.isfinite(threshold):
        return OperatingPoint("fixed", threshold)
  except ValueError:
    pass
  raise ConfigError(f"operating point {spec!r}: use youden, sensitivity:T, specificity:T "
                    "(T in (0, 1]) or a fixed threshold such as 0.5")


def choose_thresholds(op: OperatingPoint, labels: Optional[ArrayLike],
                      scores: Optional[ArrayLike], mask: Optional[ArrayLike] = None,
                      label_names: Optional[Sequence[str]] = None,
                      fallback: Optional[float] = 0.5) -> Tuple[Dict[str, float], List[str]]:
  """Per-class thresholds ``{name: t}`` by ``op`` on (validation) arrays.

  Args:
    op: the rule (:func:`parse_operating_point`).
    labels, scores: ``[N, K]`` (or ``[N]`` for one class); may be None for the fixed rule.
    mask: optional ``[N, K]``; entries with mask 0 are ignored.
    label_names: K names (default ``class_0..``; needs ``labels``).
    fallback: what a class gets when its threshold cannot be chosen. The two settings keep
      the two behaviours callers rely on:

      * a number (default 0.5; what ``evaluate_model`` records in its summary): a class is
        chosen on only when its unmasked entries hold both outcomes (for every rule, also
        sensitivity/specificity, which strictly need only one of them); otherwise it gets
        ``fallback`` and a note. Thresholds stay finite (JSON): when only "nothing
        positive" reaches a specificity target, the next float above the highest score
        (same predictions as ``inf``).
      * None: the rule's own threshold, no notes: NaN where the rule is undefined
        (sensitivity: no positives; specificity: no negatives; Youden: either missing),
        ``inf`` when only "nothing positive" reaches a specificity target.

  Returns:
    ``(thresholds, notes)``: ``{label_name: float}`` in label order, and one note per class
    that got ``fallback``.
  """
  if op.rule not in RULES:
    raise ConfigError(f"operating point rule {op.rule!r}: use one of {RULES}")
  if label_names is None:
    num_classes = 1 if np.ndim(labels) == 1 else np.shape(labels)[1]
    label_names = [f"class_{j}" for j in range(num_classes)]
  if op.rule == "fixed":
    return {name: float(op.value) for name in label_names}, []
  # Scores keep their dtype: the finite stand-in for inf is the next float of that dtype.
  labels, scores = np.asarray(labels), np.asarray(scores)
  if labels.ndim == 1:
    labels, scores = labels[:, None], scores.reshape(-1, 1)
  if labels.shape[1] != len(label_names):
    raise DataError(f"{labels.shape[1]} label columns for {len(label_names)} label names")
  mask = np.ones(labels.shape) if mask is None else np.asarray(mask).reshape(labels.shape)
  out: Dict[str, float] = {}
  notes: List[str] = []
  for j, name in enumerate(label_names):
    keep = mask[:, j] > 0
    t = _rule_threshold(op, labels[keep, j], scores[keep, j], finite=fallback is not None)
    if fallback is not None and not math.isfinite(t):
      notes.append(f"class {name!r}: no positives or no negatives in the validation set; "
                   f"threshold {fallback:g}")
      t = fallback
    out[name] = float(t)
  return out, notes


def _rule_threshold(op: OperatingPoint, y: np.ndarray, s: np.ndarray, finite: bool) -> float:
  """One class's threshold by a non-fixed rule; ``finite``: NaN unless both outcomes are
  present, and a finite stand-in for ``inf`` (see :func:`choose_thresholds`)."""
  if op.rule == "youden":
    return youden_threshold(y, s)
  if finite and not ((y == 1).any() and (y == 0).any()):
    return float("nan")
  if op.rule == "sensitivity":
    return threshold_at_sensitivity(y, s, op.value)
  t = threshold_at_specificity(y, s, op.value)
  if finite and t == float("inf"):
    # Only "nothing positive" reaches the target: the next float above every score
    # keeps JSON finite and means the same.
    t = float(np.nextafter(np.max(s), np.inf))
  return t
