"""Findings: paired differences between two arms, with a bootstrap interval and a verdict.

A finding compares arm ``b`` with arm ``a`` (REMEDIS − baseline, stage 2 − stage 1, or one
model at 100 % − itself at the smallest label fraction) on the same test patients and
seeds. Its replicates are those of :mod:`remedis_tf.eval.resampling`: every replicate draws
test patients (one draw shared by every arm, :func:`resampling.patient_weights`) and seeds
(one draw shared by every arm), and an arm's replicate value is the mean over the drawn
seeds of its metric on the drawn patients. The finding's replicate is ``b − a`` of the
same replicate, so the interval is paired over patients and seeds.

* ``estimate``: ``b − a`` of the seed means on the full test set;
* ``interval``: percentile interval of the replicate differences (undefined replicates,
  e.g. a finding without a positive among the drawn patients, are counted and left out);
* ``verdict``: ``better`` if the interval lies above 0, ``worse`` if below, else
  ``no difference`` (also when the interval is undefined).

This module is pure numpy; the runs that produce the replicates are in
:mod:`remedis_tf.runs.sweep_summary` and :mod:`remedis_tf.runs.demo_findings`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from remedis_tf.eval import resampling

VERDICTS = ("better", "worse", "no difference")
KINDS = ("frozen_", "id_", "ood_", "efficiency_")
Arm = Tuple[str, float]  # (model, fraction) of a resampling.Replicates table


def verdict(lower: Optional[float], upper: Optional[float]) -> str:
  """``better`` if ``lower > 0``, ``worse`` if ``upper < 0``, else ``no difference``."""
  if lower is None or upper is None or not (math.isfinite(lower) and math.isfinite(upper)):
    return "no difference"
  if lower > 0:
    return "better"
  if upper < 0:
    return "worse"
  return "no difference"


def _interval(diff: np.ndarray, confidence: float) -> Tuple[Optional[float], Optional[float]]:
  d = diff[np.isfinite(diff)]
  if not d.size:
    return None, None
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.percentile(d, [100 * alpha, 100 * (1 - alpha)])
  return float(lo), float(hi)


def finding(name: str, metric: str, estimate: float, lower: Optional[float],
            upper: Optional[float], **extra: Any) -> Dict[str, Any]:
  """One finding dict: ``name``, ``metric``, ``estimate``, ``interval``, ``verdict`` and
  any ``extra`` fields (e.g. the two arms' own values)."""
  if not name.startswith(KINDS):
    raise ValueError(f"finding name {name!r} must start with one of {KINDS}")
  return {"name": name, "metric": metric, "estimate": float(estimate),
          "interval": [lower, upper], "verdict": verdict(lower, upper), **extra}


def paired(reps: resampling.Replicates, a: Arm, b: Arm,
           confidence: float = 0.95) -> Dict[str, Any]:
  """``b − a`` of two arms of one replicate table: ``{"estimate", "lower", "upper",
  "num_undefined", "a", "b"}`` (``a``/``b``: each arm's seed mean on the full test set)."""
  diff = reps.replicate_means(*b) - reps.replicate_means(*a)
  lo, hi = _interval(diff, confidence)
  pa, pb = reps.point_mean(*a), reps.point_mean(*b)
  return {"estimate": pb - pa, "lower": lo, "upper": hi,
          "num_undefined": int((~np.isfinite(diff)).sum()), "a": pa, "b": pb}


def compare(name: str, metric: str, reps: resampling.Replicates, a: Arm, b: Arm,
            confidence: float = 0.95, **extra: Any) -> Dict[str, Any]:
  """The finding ``b − a`` (see :func:`paired`), with both arms' values."""
  p = paired(reps, a, b, confidence)
  return finding(name, metric, p["estimate"], p["lower"], p["upper"],
                 arms={"a": _arm_name(a), "b": _arm_name(b)}, values=[p["a"], p["b"]],
                 num_undefined=p["num_undefined"], num_samples=int(reps.seed_draws.shape[0]),
                 seeds=list(reps.seeds), **extra)


def _arm_name(arm: Arm) -> str:
  return f"{arm[0]}@{arm[1]:g}"


def from_interval(name: str, metric: str, ci: Mapping[str, Any], **extra: Any) -> Dict:
  """A finding from a precomputed paired difference ``{"value", "lower", "upper"}`` (e.g.
  :func:`remedis_tf.eval.frozen.paired_difference`)."""
  return finding(name, metric, ci["value"], ci.get("lower"), ci.get("upper"), **extra)


def learning_curve(reps: resampling.Replicates, model: str, from_fraction: float,
                   to_fraction: float = 1.0, confidence: float = 0.95) -> Dict[str, Any]:
  """How much ``model`` rises from ``from_fraction`` to ``to_fraction`` of the labels:
  ``{"model", "from_fraction", "to_fraction", "rise", "interval", "verdict", "values"}``
  (``verdict`` ``better`` = the curve rises beyond noise)."""
  p = paired(reps, (model, from_fraction), (model, to_fraction), confidence)
  return {"model": model, "from_fraction": float(from_fraction),
          "to_fraction": float(to_fraction), "rise": p["estimate"],
          "interval": [p["lower"], p["upper"]], "verdict": verdict(p["lower"], p["upper"]),
          "values": [p["a"], p["b"]]}


def sweep_findings(reps: resampling.Replicates, metric: str, site: str, arm: str,
                   reference: str = "baseline", candidate: str = "remedis",
                   confidence: float = 0.95) -> List[Dict[str, Any]]:
  """``efficiency_<site>_<arm>_f<fraction>`` (candidate − reference at each fraction both
  have) and ``efficiency_<site>_<arm>_headline`` (candidate at the smallest fraction −
  reference at the largest: does the candidate with the fewest labels match the reference
  with the most?)."""
  fractions = sorted({f for m, f in reps.cells() if m == reference} &
                     {f for m, f in reps.cells() if m == candidate})
  out = [compare(f"efficiency_{site}_{arm}_f{f:g}", metric, reps, (reference, f),
                 (candidate, f), confidence) for f in fractions]
  if len(fractions) > 1:
    out.append(compare(f"efficiency_{site}_{arm}_headline", metric, reps,
                       (reference, fractions[-1]), (candidate, fractions[0]), confidence))
  return out


def document(protocol: Mapping[str, Any], findings: Sequence[Mapping[str, Any]],
             curve: Optional[Mapping[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
  """The ``findings.json`` document: ``{"protocol", "findings", "baseline_learning_curve",
  "verdict_rule", ...}``."""
  return {"protocol": dict(protocol), "findings": [dict(f) for f in findings],
          "baseline_learning_curve": None if curve is None else dict(curve),
          "verdict_rule": ("better if the 95% paired bootstrap interval of the difference "
                           "(second arm − first) lies above 0, worse if below, else no "
                           "difference"), **extra}
