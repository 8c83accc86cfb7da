"""Data-efficiency analysis: results table, aggregation over seeds, headline fraction.

The experiment retrains each model ("baseline" = supervised pipeline without contrastive
pretraining, "remedis") on nested label fractions of a new site's data, with several
seeds, and asks: *at which fraction does REMEDIS reach the baseline's performance at
100 %?*

* :class:`Row` — one finished (model, fraction, seed) cell and its metric value.
* :func:`aggregate` — mean, sample std and a Student-t confidence interval over seeds.
* :func:`headline_fraction` — the first measured fraction reaching the reference and a
  log-linear interpolation between the bracketing fractions.
* :class:`remedis_tf.eval.result_store.ResultStore` — a resumable JSON file of finished
  cells, written atomically.
* :func:`write_table` — CSV (long format) and Markdown (one row per fraction).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

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

  ``interval`` says what ``lower``/``upper`` are: ``"t"`` (from :func:`aggregate`), the
  Student-t interval ``mean ± t_{(1+c)/2, n-1} · std / sqrt(n)`` with ``std`` the sample
  standard deviation (ddof 1), NaN with one seed (a single run says nothing about seed
  variance); ``"bootstrap"`` (from
  :meth:`remedis_tf.eval.resampling.CombinedRow.to_aggregate`), the percentile interval of
  replicates that resample seeds and test patients together. ``n_train`` is the mean over
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
  interval: str = "t"


INTERVALS = ("t", "bootstrap")


def interval_label(table: Sequence[AggregateRow]) -> str:
  """What the intervals of ``table`` are, in words (the Markdown table's header line):
  a Student-t interval over seeds, a percentile bootstrap over seeds and test patients,
  or none (one seed per cell with the t rule)."""
  if not table:
    return "no cells"
  conf = f"{100 * table[0].confidence:g}%"
  kinds = {r.interval for r in table}
  seeds = [r.num_seeds for r in table]
  if kinds == {"bootstrap"}:
    over = ("test patients (one seed per cell)" if max(seeds) <= 1
            else "seeds and test patients")
    return f"{conf} percentile bootstrap interval, resampling {over}"
  if kinds == {"t"}:
    if max(seeds) <= 1:
      return "one seed per cell: no interval"
    return (f"{conf} Student-t interval over seeds"
            + (" (none where a cell has one seed)" if min(seeds) <= 1 else ""))
  return f"{conf} intervals: " + ", ".join(sorted(kinds))


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


# --------------------------------------------------------------------------------- output


TABLE_COLUMNS = ("model", "fraction", "num_seeds", "n_train", "mean", "std", "lower", "upper",
                 "confidence", "interval")


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
  text = (f"{metric_name}: mean over seeds [{interval_label(agg)}]\n\n"
          + report.markdown_table(md_rows) + "\n")
  if headline is not None:
    text += f"\n{headline.summary}.\n"
  io_utils.atomic_write_text(md_path, text)
