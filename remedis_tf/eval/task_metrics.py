"""A task's metrics with bootstrap CIs, their JSON/CSV form, and its main metric.

:func:`evaluate_predictions` scores one set's predictions for a labelled task (multi-label,
binary, multi-class): per-class AUC, sensitivity/specificity at an operating point (see
:mod:`remedis_tf.eval.thresholds`), top-k accuracy, all with one shared set of bootstrap
resamples (:mod:`remedis_tf.eval.bootstrap`). :func:`write_metrics` writes the result as
JSON and a flat CSV (:data:`CSV_COLUMNS`); :func:`main_metric` picks its headline number.
Pure numpy, like the metric modules it combines.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from remedis_tf import io_utils
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval.bootstrap import BootstrapResult, bootstrap_ci, json_float
from remedis_tf.eval.metrics import ArrayLike, as_weights, check_binary_labels, class_ids
from remedis_tf.eval.metrics import per_class_auc, safe_divide, softmax_log_odds
from remedis_tf.eval.metrics import topk_accuracy, unbatch
from remedis_tf.tasks import LABELLED_TASKS

TASKS = LABELLED_TASKS
# The model-selection metric of a training run, in order of preference: mean AUC whenever
# the result has it (every task computes it; for multi-class the one-vs-rest macro AUC),
# else top-1 accuracy. Reports default to :func:`default_metric` of the task instead.
SELECTION_METRICS = ("mean_auc", "top1_accuracy")


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
  w, batched = as_weights(sample_weight, n)
  auc = per_class_auc(labels, scores, mask, w)  # [R, K]
  y = np.where(mask > 0, labels, 0.0) * mask
  pred = (scores >= thresholds[None, :]).astype(np.float64)
  neg = (1.0 - np.where(mask > 0, labels, 1.0)) * mask
  sens = safe_divide(w @ (y * pred), w @ y)
  spec = safe_divide(w @ (neg * (1.0 - pred)), w @ neg)
  out = np.concatenate([_mean_over_classes(auc, classes)[:, None], auc, sens, spec], axis=1)
  return unbatch(out, batched)


def _multiclass_metrics(ids, scores, auc_scores, valid, ks, classes, sample_weight=None):
  """Vector [top-k for k in ks..., mean_auc, auc_1..K] (or [R, len(ks)+1+K]); top-k
  ranks ``scores``, the one-vs-rest AUCs rank ``auc_scores`` (both ``[N, K]``); the mean
  runs over the columns ``classes`` (bool ``[K]``)."""
  n, k = scores.shape
  w, batched = as_weights(sample_weight, n)
  w = w * valid[None, :]
  accs = [np.atleast_1d(topk_accuracy(ids, scores, kk, w)) for kk in ks]
  onehot = np.eye(k)[ids]
  auc = per_class_auc(onehot, auc_scores, None, w)
  out = np.concatenate([np.stack(accs, 1), _mean_over_classes(auc, classes)[:, None], auc],
                       axis=1)
  return unbatch(out, batched)


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
      ``{name: threshold}`` (pick them on validation with
      :func:`remedis_tf.eval.thresholds.choose_thresholds`).
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
    ids = class_ids(labels, k)
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
  check_binary_labels(labels, used)
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
        "threshold": json_float(thresholds[j]),
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


# --------------------------------------------------------------------------- main metric


def default_metric(task: str) -> str:
  """The headline metric of ``task``: top-1 accuracy for multi-class, else mean AUC."""
  return "top1_accuracy" if task == "multiclass" else "mean_auc"


def main_metric(result: Mapping[str, Any], metric: Union[None, str, Sequence[str]] = None
                ) -> Tuple[str, Dict[str, Any]]:
  """``(name, CI dict)`` of one metric of an :func:`evaluate_predictions` result.

  Args:
    result: an :func:`evaluate_predictions` dict.
    metric: a metric name; or candidate names, the first one the result has (model
      selection passes :data:`SELECTION_METRICS`); default :func:`default_metric` of the
      result's task.

  Raises ConfigError when the result lacks the metric (or every candidate).
  """
  available = result.get("metrics", {})
  if metric is None:
    metric = default_metric(result.get("task"))
  if not isinstance(metric, str):
    metric = next((m for m in metric if m in available), " or ".join(metric))
  if metric not in available:
    raise ConfigError(f"metric {metric!r} is not computed for a {result.get('task')} task; "
                      f"available: {sorted(available)}")
  return metric, dict(available[metric])
