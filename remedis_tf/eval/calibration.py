"""Calibration: expected calibration error, reliability bins and temperature scaling.

Binning: ``num_bins`` equal-width bins on [0, 1] (default 15); bin ``b`` holds
probabilities in ``[b/B, (b+1)/B)``, the last bin also holds 1.0. Empty bins contribute
nothing. ECE is the example-weighted mean gap between the observed positive rate and the
mean predicted probability of each bin::

  ECE = sum_b (n_b / N) * |mean(y in b) - mean(p in b)| = sum_b |sum(y - p in b)| / N

ECE is biased upwards: sampling noise alone makes the per-bin gaps positive, more so with
few examples per bin. A bootstrap resample repeats examples, which adds to that bias, so on
small sets the percentile interval can lie partly or wholly above the estimate. Compare
ECE before and after scaling on the same set, not across sets of different sizes.

What is calibrated:

* multi-label / binary — each finding's sigmoid probability against its 0/1 label (masked
  entries excluded): one ECE and one reliability curve per finding;
* multi-class — the top-label probability (max softmax) against "argmax is correct".

Temperature scaling (Guo et al. 2017) divides the logits by ``T > 0`` before the sigmoid /
softmax, ``T`` fitted on the validation set by minimising the mean negative log-likelihood.
Scope: one temperature **per finding** for multi-label / binary (each sigmoid output is its
own binary problem, so per-finding fits are independent and cannot hurt another finding;
ranking and so AUC are unchanged), one **per model** for multi-class (a shared ``T`` keeps
the argmax, so accuracy is unchanged). The NLL is convex in ``1/T``; the fit bisects the
sign of its derivative over ``T`` in [0.05, 20] (no scipy needed, exact to float64).

A fit that cannot be trusted falls back to ``T = 1`` and records why (``fallback``:
``{finding: reason}`` in the fit and in every record written from it; the callers print
one warning line per entry):

* too few validation examples: fewer than :data:`MIN_FIT_EXAMPLES` labelled examples, or
  (multi-label / binary) fewer than :data:`MIN_FIT_PER_CLASS` positives or negatives of the
  finding (on 8 validation images the temperatures of a real run landed on the bounds
  and its exported model gave 0.5000 for two findings);
* the fit ends on a bound of ``[0.05, 20]``: the NLL keeps falling towards the bound, which
  happens when the validation scores are (nearly) separable (T → 0 makes every probability
  0 or 1) or carry no signal (T → ∞ makes every probability 0.5); neither is a temperature
  to deploy;
* the finding's validation labels are all one class (or there are none).

The fitted temperatures of a fine-tuning run are written next to its model-selection
checkpoint (``run_dir/best/temperature.json``, :data:`TEMPERATURE_FILE`) and exported
with the classifier SavedModel (see :mod:`remedis_tf.runs.classifier`).

The module is long because ECE, the temperature fit (with its fallback rules), the
temperature record on disk and the per-set report share one definition of what is
calibrated and of the probabilities; split, each part would import the others.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.errors import CheckpointError, ConfigError, DataError
from remedis_tf.eval import bootstrap

DEFAULT_NUM_BINS = 15
TEMPERATURE_FILE = "temperature.json"
TEMPERATURE_FORMAT = "remedis_tf.temperature"
T_RANGE = (0.05, 20.0)
# Smallest validation set a temperature is fitted on (see the module docstring): labelled
# examples per finding (multi-class: labelled rows), and positives / negatives per finding.
MIN_FIT_EXAMPLES = 20
MIN_FIT_PER_CLASS = 5
TOP_LABEL = "top-label"
BINNING = ("equal-width bins on [0, 1]: bin b holds p in [b/B, (b+1)/B), the last bin "
           "also holds 1.0; empty bins are skipped")


# --------------------------------------------------------------------------- ECE, bins


def _check_probs(labels: np.ndarray, probs: np.ndarray) -> None:
  if labels.shape != probs.shape:
    raise DataError(f"labels {labels.shape} and probabilities {probs.shape} differ in length")
  bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise DataError(f"probabilities must lie in [0, 1]; found {probs[i]!r} at index {i}")
  if ((labels != 0) & (labels != 1)).any():
    raise DataError("calibration labels must be 0/1")


def bin_index(probs: np.ndarray, num_bins: int) -> np.ndarray:
  """Bin of each probability (see the module docstring), int ``[N]`` in [0, num_bins)."""
  if num_bins < 1:
    raise ConfigError(f"calibration needs num_bins >= 1, got {num_bins}")
  return np.minimum(np.floor(np.asarray(probs, np.float64) * num_bins).astype(np.int64),
                    num_bins - 1)


def expected_calibration_error(labels: Any, probs: Any, num_bins: int = DEFAULT_NUM_BINS,
                               sample_weight: Optional[Any] = None):
  """ECE of binary probabilities (equal-width bins).

  Args:
    labels: ``[N]`` 0/1 outcomes; probs: ``[N]`` predicted P(y=1) in [0, 1].
    num_bins: B equal-width bins.
    sample_weight: optional ``[N]`` or ``[R, N]`` non-negative weights (the bootstrap
      passes resample counts).

  Returns:
    float in [0, 1] (or ``[R]``); NaN when the total weight is 0.
  """
  y = np.asarray(labels, np.float64).ravel()
  p = np.asarray(probs, np.float64).ravel()
  _check_probs(y, p)
  w = np.ones((y.size,)) if sample_weight is None else np.asarray(sample_weight, np.float64)
  batched = w.ndim == 2
  w = np.atleast_2d(w)
  if w.shape[1] != y.size:
    raise DataError(f"sample_weight has {w.shape[1]} columns, expected {y.size}")
  onehot = np.zeros((y.size, num_bins))
  onehot[np.arange(y.size), bin_index(p, num_bins)] = 1.0
  gap = np.abs((w * (y - p)) @ onehot).sum(1)
  total = w.sum(1)
  out = np.full(gap.shape, np.nan)
  np.divide(gap, total, out=out, where=total > 0)
  return out if batched else float(out[0])


def reliability_bins(labels: Any, probs: Any, num_bins: int = DEFAULT_NUM_BINS
                     ) -> Dict[str, List[Optional[float]]]:
  """Per-bin ``count``, ``mean_probability`` and ``fraction_positive`` (None when empty),
  plus ``edges`` (B+1), as JSON-friendly lists."""
  y = np.asarray(labels, np.float64).ravel()
  p = np.asarray(probs, np.float64).ravel()
  _check_probs(y, p)
  idx = bin_index(p, num_bins)
  count = np.bincount(idx, minlength=num_bins).astype(np.float64)
  mean_p = np.bincount(idx, weights=p, minlength=num_bins)
  frac = np.bincount(idx, weights=y, minlength=num_bins)
  nz = count > 0
  as_list = lambda v: [float(x) if ok else None for x, ok in zip(v, nz)]  # noqa: E731
  return {"edges": np.linspace(0.0, 1.0, num_bins + 1).tolist(),
          "count": count.astype(int).tolist(),
          "mean_probability": as_list(np.where(nz, mean_p / np.maximum(count, 1), 0)),
          "fraction_positive": as_list(np.where(nz, frac / np.maximum(count, 1), 0))}


# ------------------------------------------------------------------- probabilities


def probabilities(task: str, logits: Any, temperature: Optional[Any] = None) -> np.ndarray:
  """``sigmoid(logits / T)`` (multi-label/binary) or ``softmax(logits / T)`` (multi-class).

  ``logits`` ``[N, K]``; ``temperature`` None (T = 1), a scalar or ``[K]``.
  """
  z = np.asarray(logits, np.float64)
  if temperature is not None:
    z = z / np.asarray(temperature, np.float64)
  if task == "multiclass":
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
  return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow


def calibration_targets(task: str, labels: Any, probs: Any, mask: Optional[Any],
                        label_names: Sequence[str]) -> Dict[str, Tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray]]:
  """What is calibrated (module docstring): ``{name: (rows, y, p)}`` with ``rows`` the
  indices used. Multi-class gives one entry, :data:`TOP_LABEL`."""
  labels = np.asarray(labels, np.float64)
  probs = np.asarray(probs, np.float64)
  m = np.ones_like(probs) if mask is None else np.asarray(mask, np.float64)
  if task == "multiclass":
    rows = np.flatnonzero((m > 0).any(1))
    ids = labels.argmax(1) if labels.ndim == 2 else labels.astype(np.int64)
    pred = probs.argmax(1)
    return {TOP_LABEL: (rows, (pred[rows] == ids[rows]).astype(np.float64),
                        probs[rows, pred[rows]])}
  out = {}
  for j, name in enumerate(label_names):
    rows = np.flatnonzero(m[:, j] > 0)
    out[name] = (rows, labels[rows, j], probs[rows, j])
  return out


# ---------------------------------------------------------------- temperature scaling


def _nll_and_grad(task: str, z: np.ndarray, y: np.ndarray) -> Callable[[float], Tuple[float,
                                                                                       float]]:
  """``beta -> (mean NLL, d NLL / d beta)`` of probabilities act(beta * z)."""
  if task == "multiclass":
    ids = y.astype(np.int64)
    true = z[np.arange(z.shape[0]), ids]

    def f(beta):
      s = beta * z
      top = s.max(1, keepdims=True)
      e = np.exp(s - top)
      lse = np.log(e.sum(1)) + top[:, 0]
      soft = e / e.sum(1, keepdims=True)
      return float(np.mean(lse - beta * true)), float(np.mean((soft * z).sum(1) - true))
    return f

  def g(beta):
    s = beta * z
    nll = np.logaddexp(0.0, s) - y * s
    sig = 0.5 * (1.0 + np.tanh(0.5 * s))
    return float(np.mean(nll)), float(np.mean((sig - y) * z))
  return g


def _fit_beta(f: Callable[[float], Tuple[float, float]], t_range=T_RANGE,
              iterations: int = 100) -> float:
  """Minimiser of a convex 1-D NLL over beta = 1/T in [1/t_max, 1/t_min] by bisecting
  the derivative's sign in log space."""
  lo, hi = 1.0 / t_range[1], 1.0 / t_range[0]
  if f(lo)[1] >= 0:
    return lo
  if f(hi)[1] <= 0:
    return hi
  for _ in range(iterations):
    mid = math.sqrt(lo * hi)
    if f(mid)[1] > 0:
      hi = mid
    else:
      lo = mid
  return math.sqrt(lo * hi)


def fit_temperature(task: str, logits: Any, labels: Any, mask: Optional[Any] = None,
                    label_names: Optional[Sequence[str]] = None, t_range=T_RANGE,
                    min_examples: int = MIN_FIT_EXAMPLES,
                    min_per_class: int = MIN_FIT_PER_CLASS) -> Dict[str, Any]:
  """Fits temperatures minimising the validation NLL (scope: see the module docstring).

  Args:
    task: ``multilabel`` | ``binary`` | ``multiclass``.
    logits: ``[N, K]`` raw logits; labels: ``[N, K]`` 0/1 (multi-class one-hot or ``[N]``
      ids); mask: optional ``[N, K]`` (0 = not used).
    label_names: K names (default ``class_j``).
    t_range: bounds on T.
    min_examples, min_per_class: smallest set fitted on (see the module docstring).

  Returns:
    ``{"temperature": {name: T}, "scope": "per finding" | "per model",
    "nll_before": {name: mean NLL at T=1}, "nll_after": {...}, "num_examples": {...},
    "notes": [str], "fallback": {name: reason}}`` (``fallback``: the findings left at
    T = 1 and why; see :func:`fallback_warnings`). Multi-class: every name maps to the
    shared T and the NLL / example-count entries are under the key ``"all"``.
  """
  z = np.asarray(logits, np.float64)
  if z.ndim != 2:
    raise DataError(f"logits must be [N, K], got shape {z.shape}")
  n, k = z.shape
  names = list(label_names) if label_names is not None else [f"class_{j}" for j in range(k)]
  if len(names) != k:
    raise ConfigError(f"{len(names)} label_names for {k} logit columns")
  y = np.asarray(labels, np.float64)
  m = np.ones((n, k)) if mask is None else np.asarray(mask, np.float64).reshape(n, k)
  out: Dict[str, Any] = {"temperature": {}, "nll_before": {}, "nll_after": {},
                         "num_examples": {}, "notes": [], "fallback": {}}
  if task == "multiclass":
    rows = (m > 0).any(1)
    ids = (y.argmax(1) if y.ndim == 2 else y.astype(np.int64))[rows]
    f = _nll_and_grad(task, z[rows], ids)
    count = int(rows.sum())
    reason = None
    if count < min_examples:
      reason = (f"{count} labelled validation example(s), fewer than {min_examples}: "
                "too few to fit a temperature")
    t, reason = _fit_unless(reason, f, t_range)
    if reason is not None:
      out["notes"].append(f"all classes: {reason}; T = 1")
      out["fallback"] = {name: reason for name in names}
    out["scope"] = "per model"
    out["temperature"] = {name: float(t) for name in names}
    out["nll_before"]["all"] = f(1.0)[0] if count else None
    out["nll_after"]["all"] = f(1.0 / t)[0] if count else None
    out["num_examples"]["all"] = count
    return out
  y = y.reshape(n, k)
  out["scope"] = "per finding"
  for j, name in enumerate(names):
    keep = m[:, j] > 0
    yj, zj = y[keep, j], z[keep, j]
    f = _nll_and_grad(task, zj, yj)
    positives = int((yj > 0.5).sum())
    negatives = int(yj.size - positives)
    if yj.size == 0 or yj.min() == yj.max():
      reason = "validation labels are all one class (or none)"
    elif yj.size < min_examples or min(positives, negatives) < min_per_class:
      reason = (f"{yj.size} labelled validation example(s) ({positives} positive, "
                f"{negatives} negative), fewer than {min_examples} examples or "
                f"{min_per_class} of each class: too few to fit a temperature")
    else:
      reason = None
    t, reason = _fit_unless(reason, f, t_range)
    if reason is not None:
      out["notes"].append(f"{name}: {reason}; T = 1")
      out["fallback"][name] = reason
    out["temperature"][name] = float(t)
    out["nll_before"][name] = f(1.0)[0] if yj.size else None
    out["nll_after"][name] = f(1.0 / t)[0] if yj.size else None
    out["num_examples"][name] = int(yj.size)
  return out


def _fit_unless(reason: Optional[str], f, t_range) -> Tuple[float, Optional[str]]:
  """``(T, None)`` fitted on ``f``, or ``(1.0, reason)`` when there is already a reason not
  to fit or the fit ends on a bound of ``t_range``."""
  if reason is None:
    t = 1.0 / _fit_beta(f, t_range)
    reason = _bound_reason(t, t_range)
    if reason is None:
      return t, None
  return 1.0, reason


def _bound_reason(t: float, t_range) -> Optional[str]:
  """Why a fitted ``t`` is not used (it ends on a bound of ``t_range``), else None."""
  lo, hi = t_range
  # The bisection ends within a factor 1 + 1e-12 of a bound it runs into.
  if t <= lo * (1 + 1e-9):
    return (f"the fit ended on the lower bound T = {lo:g} (validation scores nearly "
            "separable, or too few examples)")
  if t >= hi * (1 - 1e-9):
    return (f"the fit ended on the upper bound T = {hi:g} (validation scores carry no "
            "signal)")
  return None


def fallback_warnings(fit_or_record: Optional[Mapping[str, Any]]) -> List[str]:
  """One line per finding whose temperature fell back to T = 1, with the reason (what the
  callers print as warnings); ``[]`` for None or a record without fallbacks."""
  fallback = (fit_or_record or {}).get("fallback") or {}
  if not fallback:
    return []
  if len(set(fallback.values())) == 1 and len(fallback) > 1:
    return [f"temperature of {', '.join(fallback)} not fitted: {next(iter(fallback.values()))}"
            "; using T = 1"]
  return [f"temperature of {name} not fitted: {why}; using T = 1"
          for name, why in fallback.items()]


def temperature_record(task: str, label_names: Sequence[str], fit: Mapping[str, Any],
                       fitted_on: str) -> Dict[str, Any]:
  """The JSON saved with a classifier (``temperature.json`` / the SavedModel sidecar)."""
  return {"format": TEMPERATURE_FORMAT, "version": 1, "task": task,
          "label_names": list(label_names), "fitted_on": fitted_on,
          "method": "temperature scaling, mean NLL minimised on the validation set",
          **{k: fit[k] for k in ("temperature", "scope", "nll_before", "nll_after",
                                 "num_examples", "notes")},
          "fallback": dict(fit.get("fallback") or {})}


def temperature_vector(record: Optional[Mapping[str, Any]], label_names: Sequence[str]
                       ) -> np.ndarray:
  """float32 ``[K]`` temperatures in ``label_names`` order (ones when ``record`` is None)."""
  if record is None:
    return np.ones((len(label_names),), np.float32)
  temps = record.get("temperature", {})
  missing = [n for n in label_names if n not in temps]
  if missing:
    raise CheckpointError(f"temperature record has no temperature for {missing[0]!r} "
                          f"(has {sorted(temps)})")
  values = np.asarray([float(temps[n]) for n in label_names], np.float32)
  if not np.all(np.isfinite(values) & (values > 0)):
    raise CheckpointError(f"temperatures must be finite and > 0, got {values.tolist()}")
  return values


def write_temperature(directory: str, record: Mapping[str, Any]) -> str:
  """Writes ``directory/temperature.json`` atomically; returns its path."""
  path = os.path.join(directory, TEMPERATURE_FILE)
  io_utils.atomic_write_json(path, dict(record))
  return path


def read_temperature(directory: str) -> Optional[Dict[str, Any]]:
  """``directory/temperature.json`` (None when absent; CheckpointError when unreadable)."""
  path = os.path.join(directory, TEMPERATURE_FILE)
  if not tf.io.gfile.exists(path):
    return None
  try:
    record = io_utils.read_json(path)
  except (ValueError, tf.errors.OpError) as e:
    raise CheckpointError(f"{path}: unreadable temperature file ({e})") from None
  if not isinstance(record, dict) or record.get("format") != TEMPERATURE_FORMAT:
    raise CheckpointError(f"{path}: not a {TEMPERATURE_FORMAT} file")
  return record


# -------------------------------------------------------------------- report per set


def calibration_report(task: str, labels: Any, logits: Any, mask: Optional[Any],
                       label_names: Sequence[str], temperature: Optional[Any] = None,
                       patients: Optional[Any] = None, num_bins: int = DEFAULT_NUM_BINS,
                       num_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
                       ) -> Dict[str, Any]:
  """ECE (with patient-level bootstrap CIs) and reliability bins, before (T = 1) and after
  temperature scaling, per finding (multi-class: top-label).

  Args:
    task, labels, mask, label_names: as in ``evaluate_predictions``.
    logits: ``[N, K]`` raw logits.
    temperature: ``[K]`` temperatures (None: only "before" is reported).
    patients: ``[N]`` ids for the patient-level bootstrap (None: example level).
    num_bins, num_bootstrap, confidence, seed: binning and bootstrap settings.

  Returns:
    ``{"num_bins", "binning", "targets": {name: {"num_examples", "ece_before": CI,
    "ece_after": CI | None, "bins_before", "bins_after" | None}}}`` with CI dicts as in
    ``evaluate_predictions``.
  """
  before = probabilities(task, logits)
  after = None if temperature is None else probabilities(task, logits, temperature)
  tb = calibration_targets(task, labels, before, mask, label_names)
  ta = None if after is None else calibration_targets(task, labels, after, mask, label_names)
  groups = None if patients is None else np.asarray(patients)
  out: Dict[str, Any] = {"num_bins": int(num_bins), "binning": BINNING, "targets": {}}
  for name, (rows, y, pb) in tb.items():
    pa = pb if ta is None else ta[name][2]
    ya = y if ta is None else ta[name][1]  # multi-class: correctness can differ only by ties

    def fn(yy, p0, yy1, p1, sample_weight=None):
      a = expected_calibration_error(yy, p0, num_bins, sample_weight)
      b = expected_calibration_error(yy1, p1, num_bins, sample_weight)
      return np.stack([np.asarray(a), np.asarray(b)], axis=-1)

    entry: Dict[str, Any] = {"num_examples": int(rows.size)}
    if rows.size == 0:
      nan_ci = {"value": None, "lower": None, "upper": None, "std": None, "num_undefined": 0}
      entry.update(ece_before=nan_ci, ece_after=None if after is None else nan_ci,
                   bins_before=None, bins_after=None)
      out["targets"][name] = entry
      continue
    g = None if groups is None else groups[rows]
    if num_bootstrap > 0:
      res = bootstrap.bootstrap_ci(fn, y, pb, ya, pa, groups=g, num_samples=num_bootstrap,
                                   confidence=confidence, seed=seed)
      cis = [res.component(i).to_dict() for i in range(2)]
    else:
      est = fn(y, pb, ya, pa)
      cis = [{"value": float(v), "lower": None, "upper": None, "std": None,
              "num_undefined": 0} for v in est]
    entry["ece_before"] = cis[0]
    entry["bins_before"] = reliability_bins(y, pb, num_bins)
    entry["ece_after"] = None if after is None else cis[1]
    entry["bins_after"] = None if after is None else reliability_bins(ya, pa, num_bins)
    out["targets"][name] = entry
  return out
