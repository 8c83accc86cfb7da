"""Data-efficiency analysis: results table, aggregation over seeds, headline fraction.

The experiment retrains each model ("baseline" = supervised pipeline without contrastive
pretraining, "remedis") on nested label fractions of a new site's data, with several
seeds, and asks: *at which fraction does REMEDIS reach the baseline's performance at
100 %?*

* :class:`Row` — one finished (model, fraction, seed) cell and its metric value.
* :func:`aggregate` — mean, sample std and a Student-t confidence interval over seeds.
* :func:`headline_fraction` — the first measured fraction reaching the reference and a
  log-linear interpolation between the bracketing fractions.
* :class:`ResultStore` — a resumable JSON file of finished cells, written atomically.
* :func:`write_table` — CSV (long format) and Markdown (one row per fraction).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import report


# ---------------------------------------------------------------------------- table rows


@dataclasses.dataclass(frozen=True)
class Cell:
  """One unit of work: a model trained on a label fraction with a seed."""
  model: str
  fraction: float
  seed: int

  def key(self) -> Tuple[str, float, int]:
    # Rounding makes 0.1 read back from JSON/flags equal to 0.1 computed as 1/10.
    return (self.model, round(float(self.fraction), 12), int(self.seed))


@dataclasses.dataclass(frozen=True)
class Row:
  """A finished cell and its metric value (``n_train``: training examples used)."""
  model: str
  fraction: float
  seed: int
  value: float
  n_train: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class AggregateRow:
  """Summary of one (model, fraction) over seeds.

  ``std`` is the sample standard deviation (ddof 1); ``lower``/``upper`` the Student-t
  interval ``mean ± t_{(1+c)/2, n-1} · std / sqrt(n)``. With one seed std and the interval
  are NaN (a single run says nothing about seed variance). ``n_train`` is the mean over
  seeds (None when unknown).
  """
  model: str
  fraction: float
  mean: float
  std: float
  lower: float
  upper: float
  num_seeds: int
  n_train: Optional[float] = None
  confidence: float = 0.95


def _as_row(row: Union[Row, Mapping[str, Any]]) -> Row:
  if isinstance(row, Row):
    return row
  try:
    return Row(str(row["model"]), float(row["fraction"]), int(row["seed"]), float(row["value"]),
               None if row.get("n_train") is None else int(row["n_train"]))
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"bad data-efficiency row {dict(row)!r}: {e}") from None


def _t_pdf_integral(x: float, df: float) -> float:
  """∫_0^x of the Student-t density (x >= 0), composite Simpson with 4096 intervals."""
  if x == 0:
    return 0.0
  t = np.linspace(0.0, x, 4097)
  log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
  pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
  h = x / 4096
  return float(h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum()))


def t_quantile(p: float, df: float) -> float:
  """Quantile of Student's t with ``df`` degrees of freedom (p in (0, 1))."""
  if not 0.0 < p < 1.0 or not df > 0:
    raise ConfigError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  target = p - 0.5
  hi = 1.0
  while _t_pdf_integral(hi, df) < target:
    hi *= 2.0
  lo = 0.0
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    if _t_pdf_integral(mid, df) < target:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


def aggregate(rows: Iterable[Union[Row, Mapping[str, Any]]], confidence: float = 0.95
              ) -> List[AggregateRow]:
  """Per (model, fraction): mean, std and t-interval over seeds (see :class:`AggregateRow`).

  Non-finite values (a metric undefined in one run) are left out of that cell's
  statistics and its ``num_seeds``. Rows come back sorted by model, then fraction.
  """
  if not 0.0 < confidence < 1.0:
    raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
  cells: Dict[Tuple[str, float], List[Row]] = {}
  for r in map(_as_row, rows):
    cells.setdefault((r.model, round(r.fraction, 12)), []).append(r)
  out = []
  for (model, fraction), group in sorted(cells.items()):
    values = np.asarray([r.value for r in group if math.isfinite(r.value)])
    n = values.size
    mean = float(values.mean()) if n else float("nan")
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    trains = [r.n_train for r in group if r.n_train is not None]
    out.append(AggregateRow(model, fraction, mean, std, mean - half, mean + half, n,
                            float(np.mean(trains)) if trains else None, confidence))
  return out


def _aggregated(table: Sequence[Any]) -> List[AggregateRow]:
  """Accepts aggregated rows (objects or dicts with ``mean``) or raw rows."""
  table = list(table)
  if table and all(isinstance(r, AggregateRow) for r in table):
    return table
  if table and all(isinstance(r, Mapping) and "mean" in r for r in table):
    names = {f.name for f in dataclasses.fields(AggregateRow)}
    return [AggregateRow(**{k: v for k, v in r.items() if k in names}) for r in table]
  return aggregate(table)


# ------------------------------------------------------------------------------ headline


@dataclasses.dataclass(frozen=True)
class Headline:
  """Where the candidate reaches the reference model's performance.

  Attributes:
    reached: whether any measured candidate mean reaches ``reference_value``.
    reference_value: the reference model's mean at ``reference_fraction``.
    first_fraction: smallest measured fraction whose candidate mean reaches it (None if not).
    interpolated_fraction: log-linear interpolation between the last fraction below and
      ``first_fraction``; equals ``first_fraction`` when that is the smallest measured one
      (nothing to interpolate from); None if not reached.
    bracket: ``(f_below, mean_below, f_reached, mean_reached)`` used for the
      interpolation, or None.
    best_fraction, best_value: the candidate's best measured mean (useful when not reached).
    method: the rule in words. summary: one sentence for reports.
  """
  reached: bool
  reference_model: str
  candidate_model: str
  reference_fraction: float
  reference_value: float
  first_fraction: Optional[float]
  interpolated_fraction: Optional[float]
  bracket: Optional[Tuple[float, float, float, float]]
  best_fraction: float
  best_value: float
  higher_is_better: bool
  method: str
  summary: str

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def _pct(f: float) -> str:
  return f"{100 * f:.3g}%"


def headline_fraction(table: Sequence[Any], reference_model: str = "baseline",
                      candidate_model: str = "remedis", reference_fraction: float = 1.0,
                      higher_is_better: bool = True) -> Headline:
  """Smallest label fraction at which the candidate's mean reaches the reference.

  Args:
    table: raw rows (:class:`Row` / dicts) or :func:`aggregate` output.
    reference_model: model whose mean at ``reference_fraction`` is the target.
    candidate_model: model whose fractions are searched (ascending).
    reference_fraction: usually 1.0 (the reference retrained on all labels).
    higher_is_better: False for metrics like loss (then "reaches" means <=).

  Returns:
    :class:`Headline`. Interpolation: with ``f0 < f1`` the last fraction below and the
    first reaching, and means ``m0 < ref <= m1``, ``t = (ref - m0) / (m1 - m0)`` and
    ``f* = exp(log f0 + t · (log f1 - log f0)) = f0 · (f1 / f0) ** t`` (linear in the
    metric against log-fraction, the axis data-efficiency curves are drawn on).

  Raises:
    ConfigError: a model or the reference fraction is missing from the table.
  """
  agg = _aggregated(table)
  ref = [r for r in agg if r.model == reference_model
         and math.isclose(r.fraction, reference_fraction, rel_tol=1e-9)]
  if not ref:
    raise ConfigError(f"no results for reference model {reference_model!r} at fraction "
                      f"{reference_fraction}")
  ref_value = ref[0].mean
  cand = sorted((r for r in agg if r.model == candidate_model and math.isfinite(r.mean)),
                key=lambda r: r.fraction)
  if not cand:
    raise ConfigError(f"no results for candidate model {candidate_model!r}")
  sign = 1.0 if higher_is_better else -1.0
  best = max(cand, key=lambda r: sign * r.mean)
  method = (f"first measured fraction (ascending) where the mean of {candidate_model} over "
            f"seeds is {'>=' if higher_is_better else '<='} the mean of {reference_model} at "
            f"{_pct(reference_fraction)}; interpolated fraction: log-linear between the last "
            "measured fraction below and that fraction, f* = f0 * (f1/f0)**((ref-m0)/(m1-m0))")
  common = dict(reference_model=reference_model, candidate_model=candidate_model,
                reference_fraction=float(reference_fraction), reference_value=float(ref_value),
                best_fraction=float(best.fraction), best_value=float(best.mean),
                higher_is_better=higher_is_better, method=method)
  hit = next((i for i, r in enumerate(cand) if sign * (r.mean - ref_value) >= 0), None)
  if hit is None:
    return Headline(reached=False, first_fraction=None, interpolated_fraction=None, bracket=None,
                    summary=(f"{candidate_model} does not reach {reference_model}@"
                             f"{_pct(reference_fraction)} ({ref_value:.3f}) within the measured "
                             f"fractions (best {best.mean:.3f} at {_pct(best.fraction)})"),
                    **common)
  first = cand[hit]
  if hit == 0:
    return Headline(reached=True, first_fraction=float(first.fraction),
                    interpolated_fraction=float(first.fraction), bracket=None,
                    summary=(f"{candidate_model} reaches {reference_model}@"
                             f"{_pct(reference_fraction)} ({ref_value:.3f}) already at the "
                             f"smallest measured fraction, {_pct(first.fraction)} "
                             f"({first.mean:.3f}); the true crossing may be lower"), **common)
  below = cand[hit - 1]
  t = (ref_value - below.mean) / (first.mean - below.mean)
  interp = below.fraction * (first.fraction / below.fraction) ** t
  return Headline(reached=True, first_fraction=float(first.fraction),
                  interpolated_fraction=float(interp),
                  bracket=(float(below.fraction), float(below.mean), float(first.fraction),
                           float(first.mean)),
                  summary=(f"{candidate_model} reaches {reference_model}@"
                           f"{_pct(reference_fraction)} ({ref_value:.3f}) at {_pct(first.fraction)}"
                           f" of the labels ({first.mean:.3f}); interpolated {_pct(interp)}"),
                  **common)


# --------------------------------------------------------------------------- result store


def _json_safe(obj: Any) -> Any:
  """Recursively converts numpy scalars/arrays and non-finite floats (→ None) for JSON."""
  if isinstance(obj, Mapping):
    return {str(k): _json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, np.ndarray)):
    return [_json_safe(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if obj is None or isinstance(obj, str):
    return obj
  raise ConfigError(f"result value of type {type(obj).__name__} is not JSON-serialisable")


class ResultStore:
  """Finished (model, fraction, seed) cells and their metrics in one JSON file.

  Every :meth:`add` re-reads the file (to keep cells other processes finished meanwhile),
  then rewrites it atomically (temporary file + rename), so an interrupted write leaves
  the previous file intact. Only finished cells are added, so a failed run never replaces
  an earlier result. A file that exists but cannot be parsed raises DataError instead of
  being silently replaced.

  File shape: ``{"format": "remedis_tf.ResultStore", "version": 1, "cells": [{"model",
  "fraction", "seed", "result": {...}, "finished_at": ISO time}, ...]}``.
  """

  FORMAT = "remedis_tf.ResultStore"

  def __init__(self, path: str):
    self.path = path
    self._cells: Dict[Tuple[str, float, int], Dict[str, Any]] = self._load()

  def _load(self) -> Dict[Tuple[str, float, int], Dict[str, Any]]:
    if not tf.io.gfile.exists(self.path):
      return {}
    try:
      with tf.io.gfile.GFile(self.path, "r") as f:
        data = json.load(f)
      if data.get("format") != self.FORMAT:
        raise ValueError(f"format is {data.get('format')!r}")
      cells = {}
      for entry in data["cells"]:
        cell = Cell(str(entry["model"]), float(entry["fraction"]), int(entry["seed"]))
        cells[cell.key()] = entry
      return cells
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise DataError(f"result store {self.path} is unreadable ({e}); move it aside to start "
                      "a new one") from None

  @staticmethod
  def _cell(cell: Union[Cell, Tuple[str, float, int]]) -> Cell:
    return cell if isinstance(cell, Cell) else Cell(str(cell[0]), float(cell[1]), int(cell[2]))

  def reload(self) -> None:
    """Re-reads the file (picks up cells finished by other processes)."""
    self._cells = self._load()

  def has(self, cell: Union[Cell, Tuple[str, float, int]]) -> bool:
    """True if the cell (``Cell`` or ``(model, fraction, seed)``) already finished."""
    return self._cell(cell).key() in self._cells

  def get(self, cell: Union[Cell, Tuple[str, float, int]]) -> Optional[Dict[str, Any]]:
    """The stored result dict of a finished cell, else None."""
    entry = self._cells.get(self._cell(cell).key())
    return None if entry is None else entry["result"]

  def add(self, cell: Union[Cell, Tuple[str, float, int]], result: Mapping[str, Any]) -> None:
    """Records a finished cell's result (JSON-serialisable dict, e.g. metrics + n_train).

    Adding a cell that is already present replaces its result (a deliberate rerun).
    """
    cell = self._cell(cell)
    entry = {"model": cell.model, "fraction": cell.fraction, "seed": cell.seed,
             "result": _json_safe(dict(result)),
             "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    cells = self._load()
    cells[cell.key()] = entry
    ordered = [cells[k] for k in sorted(cells)]
    io_utils.atomic_write_json(self.path, {"format": self.FORMAT, "version": 1,
                                           "cells": ordered})
    self._cells = cells

  def cells(self) -> List[Cell]:
    """Finished cells, sorted by model, fraction, seed."""
    return [Cell(e["model"], e["fraction"], e["seed"]) for _, e in sorted(self._cells.items())]

  def rows(self, metric: str, n_train_key: str = "n_train") -> List[Row]:
    """Table rows for one metric. A result's ``metric`` entry may be a number or a CI dict
    with ``value`` (as in :func:`remedis_tf.eval.task_metrics.evaluate_predictions`); dotted
    names reach into nested dicts (``"metrics.mean_auc"``). Cells without it are skipped."""
    out = []
    for _, e in sorted(self._cells.items()):
      found, value = _lookup(e["result"], metric)
      if not found:
        continue
      if isinstance(value, Mapping):
        value = value.get("value")
      n_train = e["result"].get(n_train_key)
      out.append(Row(e["model"], float(e["fraction"]), int(e["seed"]),
                     float("nan") if value is None else float(value),
                     None if n_train is None else int(n_train)))
    return out


def _lookup(result: Mapping[str, Any], dotted: str) -> Tuple[bool, Any]:
  """(found, value) of a dotted key path in nested dicts."""
  node: Any = result
  for part in dotted.split("."):
    if not isinstance(node, Mapping) or part not in node:
      return False, None
    node = node[part]
  return True, node


# --------------------------------------------------------------------------------- output


TABLE_COLUMNS = ("model", "fraction", "num_seeds", "n_train", "mean", "std", "lower", "upper",
                 "confidence")


def write_table(table: Sequence[Any], csv_path: str, md_path: str, metric_name: str = "metric",
                headline: Optional[Headline] = None) -> None:
  """Writes the aggregated table as CSV (long: ``TABLE_COLUMNS``) and Markdown (one row per
  fraction, one ``mean [lower, upper]`` column per model), both atomically. Raw rows are
  aggregated first; a headline adds its summary under the Markdown table."""
  agg = _aggregated(table)
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(TABLE_COLUMNS)
  for r in agg:
    d = dataclasses.asdict(r)
    writer.writerow(["" if d[c] is None or (isinstance(d[c], float) and math.isnan(d[c]))
                     else d[c] for c in TABLE_COLUMNS])
  io_utils.atomic_write_text(csv_path, buf.getvalue())

  models = list(dict.fromkeys(r.model for r in agg))
  fractions = sorted({round(r.fraction, 12) for r in agg})
  by_key = {(r.model, round(r.fraction, 12)): r for r in agg}
  md_rows = []
  for f in fractions:
    row: Dict[str, Any] = {"fraction": _pct(f)}
    for m in models:
      r = by_key.get((m, f))
      row[f"{m} {metric_name}"] = (report.format_ci(r.mean, r.lower, r.upper)
                                   if r is not None else report.MISSING)
      row[f"{m} n_train"] = (int(round(r.n_train)) if r is not None and r.n_train is not None
                             else None)
      row[f"{m} seeds"] = r.num_seeds if r is not None else None
    md_rows.append(row)
  conf = agg[0].confidence if agg else 0.95
  text = (f"{metric_name}: mean over seeds [{100 * conf:g}% t-interval]\n\n"
          + report.markdown_table(md_rows) + "\n")
  if headline is not None:
    text += f"\n{headline.summary}.\n"
  io_utils.atomic_write_text(md_path, text)
