"""Percentile bootstrap confidence intervals, by example or by patient (pure numpy).

:func:`bootstrap_ci` draws resamples as integer count weights: a metric that accepts
``sample_weight`` (every metric of :mod:`remedis_tf.eval.metrics`) is evaluated on all
resamples in a few vectorised chunks; any other ``metric_fn(*arrays)`` is called once per
resample on the resampled arrays. :class:`BootstrapResult` holds the estimate, interval,
standard error and the count of resamples where the metric was undefined (NaN).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Dict, Optional

import numpy as np

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval.metrics import CHUNK_ELEMENTS, ArrayLike


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
    return {"value": json_float(self.estimate), "lower": json_float(self.lower),
            "upper": json_float(self.upper), "std": json_float(self.std),
            "num_undefined": int(self.num_undefined)}


def json_float(x) -> Optional[float]:
  """``float(x)``, or None when it is not finite (JSON has no NaN/inf)."""
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
      metric in :mod:`remedis_tf.eval.metrics`), resamples are evaluated as count
      weights in vectorised chunks; otherwise it is called once per resample on the
      resampled arrays.
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
  step = max(1, CHUNK_ELEMENTS // max(1, n, num_groups))
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
