"""Subgroup reports: every metric, with patient-level bootstrap CIs, per value of a column.

A subgroup column is a manifest column kept in ``Record.attributes`` (readers take
``attribute_columns``, e.g. CheXpert's ``Sex``, ``AP/PA``, ``Age``; MIMIC's
``ViewPosition``) or one of the record fields ``view`` / ``site``. A numeric column can be
cut into bands with a spec such as ``Age:40,60,80``: edges ``e_0 < … < e_m`` give the
bands ``<40``, ``[40, 60)``, ``[60, 80)``, ``>=80`` (left-closed, so 60 falls in
``[60, 80)``). Blank cells form the group ``unknown``.

Each subgroup is scored by :func:`remedis_tf.eval.task_metrics.evaluate_predictions` on its
own rows (same operating-point thresholds, same bootstrap settings: whole patients are
resampled within the subgroup). A subgroup is flagged, and gets point estimates but no
interval, when it has fewer than ``min_patients`` patients; a finding without positives
or without negatives in a subgroup is flagged too (its AUC and sensitivity or
specificity are undefined there).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from remedis_tf import io_utils
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import task_metrics

UNKNOWN = "unknown"
BUILTIN_COLUMNS = ("view", "site")
DEFAULT_MIN_PATIENTS = 10
CSV_COLUMNS = ("column", "group", "metric", "class", "value", "lower", "upper",
               "num_examples", "num_patients", "num_positive", "num_negative", "interval",
               "flags")


@dataclasses.dataclass(frozen=True)
class SubgroupSpec:
  """One subgroup column.

  Attributes:
    column: the column name (an attribute column, or ``view`` / ``site``).
    edges: strictly increasing band edges for a numeric column; empty = categorical.
  """
  column: str
  edges: Tuple[float, ...] = ()

  def describe(self) -> str:
    """The spec as written on the command line (``Age:40,60,80``)."""
    if not self.edges:
      return self.column
    return self.column + ":" + ",".join(f"{e:g}" for e in self.edges)

  def band_names(self) -> List[str]:
    """Band labels in ascending order (empty for a categorical column)."""
    if not self.edges:
      return []
    e = [f"{x:g}" for x in self.edges]
    return ([f"<{e[0]}"] + [f"[{a}, {b})" for a, b in zip(e[:-1], e[1:])]
            + [f">={e[-1]}"])

  def band(self, value: float) -> str:
    """The band label of a number (see the module docstring)."""
    i = int(np.searchsorted(np.asarray(self.edges), value, side="right"))
    return self.band_names()[i]


def parse_subgroup_spec(spec: Any) -> SubgroupSpec:
  """``"Sex"`` or ``"Age:40,60,80"`` → :class:`SubgroupSpec` (ConfigError if malformed).

  The text after the last ``:`` is read as band edges only when it is a comma-separated
  list of numbers, so column names containing ``:`` still work.
  """
  if isinstance(spec, SubgroupSpec):
    return spec
  text = str(spec).strip()
  column, sep, tail = text.rpartition(":")
  edges: Tuple[float, ...] = ()
  if sep:
    try:
      edges = tuple(float(x) for x in tail.split(","))
    except ValueError:
      column, edges = text, ()
    else:
      if not all(math.isfinite(x) for x in edges) or any(
          b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise ConfigError(f"subgroup {text!r}: band edges must be finite and strictly "
                          "increasing, e.g. Age:40,60,80")
  else:
    column = text
  column = column.strip()
  if not column:
    raise ConfigError(f"subgroup {text!r}: no column name (write COLUMN or COLUMN:E1,E2,...)")
  return SubgroupSpec(column, edges)


def parse_subgroup_specs(specs: Optional[Sequence[Any]]) -> Tuple[SubgroupSpec, ...]:
  """Several specs; a column named twice is a ConfigError."""
  out = tuple(parse_subgroup_spec(s) for s in specs or ())
  seen = set()
  for s in out:
    if s.column in seen:
      raise ConfigError(f"subgroup column {s.column!r} given twice")
    seen.add(s.column)
  return out


def attribute_columns(specs: Sequence[Any]) -> Tuple[str, ...]:
  """The columns a reader must keep for ``specs`` (``view`` / ``site`` need none)."""
  return tuple(s.column for s in parse_subgroup_specs(specs)
               if s.column not in BUILTIN_COLUMNS)


def _raw_value(record: Record, column: str) -> Optional[str]:
  value = record.attribute(column)
  if value is None and column in BUILTIN_COLUMNS:
    value = getattr(record, column)
  return value


def subgroup_values(manifest: Manifest, spec: Any) -> np.ndarray:
  """The subgroup label ``[N]`` (str) of every record of ``manifest``, in order.

  Raises DataError when a record lacks the column (the reader was not asked to keep it)
  or, for a banded column, when a non-blank cell is not a number (naming the CSV row).
  """
  spec = parse_subgroup_spec(spec)
  out = []
  for r in manifest.records:
    raw = _raw_value(r, spec.column)
    if raw is None:
      kept = [k for k, _ in r.attributes] + list(BUILTIN_COLUMNS)
      raise DataError(f"{manifest.source}: records carry no column {spec.column!r} for "
                      f"subgroups (available: {', '.join(kept)}); the reader must keep it "
                      "(attribute_columns)")
    raw = raw.strip()
    if not raw:
      out.append(UNKNOWN)
    elif spec.edges:
      try:
        x = float(raw)
      except ValueError:
        x = float("nan")
      if not math.isfinite(x):
        raise DataError(f"{manifest.source}:{r.source_row}: column {spec.column!r}: "
                        f"{raw!r} is not a number (bands {spec.describe()})")
      out.append(spec.band(x))
    else:
      out.append(raw)
  return np.asarray(out, dtype=object)


def _group_order(values: np.ndarray, spec: SubgroupSpec) -> List[str]:
  present = set(values.tolist())
  if spec.edges:
    order = [b for b in spec.band_names() if b in present]
  else:
    order = sorted(present - {UNKNOWN})
  return order + ([UNKNOWN] if UNKNOWN in present else [])


def evaluate_subgroups(task: str, labels: np.ndarray, scores: np.ndarray, mask: np.ndarray,
                       patients: np.ndarray, values: np.ndarray, spec: Any,
                       label_names: Sequence[str], min_patients: int = DEFAULT_MIN_PATIENTS,
                       **evaluate_kwargs) -> Dict[str, Any]:
  """Scores each subgroup of one column.

  Args:
    task, labels, scores, mask, label_names: as in
      :func:`remedis_tf.eval.task_metrics.evaluate_predictions` (``[N, K]`` arrays).
    patients: ``[N]`` patient ids (the bootstrap resamples patients within a subgroup).
    values: ``[N]`` subgroup labels from :func:`subgroup_values`.
    spec: the column's :class:`SubgroupSpec` (or its text).
    min_patients: subgroups with fewer patients get no interval (flagged).
    **evaluate_kwargs: passed on (``operating_point``, ``num_bootstrap``, ``confidence``,
      ``seed``, ``topk``).

  Returns:
    ``{"column", "spec", "min_patients", "order": [group, ...], "groups": {group:
    {"num_examples", "num_patients", "interval": bool, "flags": [str], "result":
    evaluate_predictions dict}}}``; ``order`` lists the groups in band order (categorical:
    sorted), ``unknown`` last (JSON files sort dict keys, so read the order from it; see
    :func:`ordered_groups`).
  """
  spec = parse_subgroup_spec(spec)
  if min_patients < 1:
    raise ConfigError(f"subgroup min_patients must be >= 1, got {min_patients}")
  values = np.asarray(values, dtype=object)
  patients = np.asarray(patients)
  n = np.asarray(scores).shape[0]
  if values.shape[0] != n or patients.shape[0] != n:
    raise DataError(f"subgroup {spec.column!r}: {values.shape[0]} values and "
                    f"{patients.shape[0]} patients for {n} predictions")
  groups: Dict[str, Any] = {}
  for group in _group_order(values, spec):
    idx = np.flatnonzero(values == group)
    num_patients = int(np.unique(patients[idx]).size)
    flags: List[str] = []
    kwargs = dict(evaluate_kwargs)
    interval = num_patients >= min_patients
    if not interval:
      flags.append(f"fewer than {min_patients} patients ({num_patients}): no interval")
      kwargs["num_bootstrap"] = 0
    result = task_metrics.evaluate_predictions(
        task, np.asarray(labels)[idx], np.asarray(scores)[idx], np.asarray(mask)[idx],
        patients=patients[idx], label_names=list(label_names), **kwargs)
    for name, entry in result["per_class"].items():
      if entry["num_positive"] == 0:
        flags.append(f"{name}: no positives")
      elif entry["num_negative"] == 0:
        flags.append(f"{name}: no negatives")
    groups[group] = {"num_examples": int(idx.size), "num_patients": num_patients,
                     "interval": bool(interval and result["bootstrap"]["num_samples"] > 0),
                     "flags": flags, "result": result}
  return {"column": spec.column, "spec": spec.describe(), "min_patients": int(min_patients),
          "order": list(groups), "groups": groups}


def ordered_groups(report: Mapping[str, Any]) -> List[Tuple[str, Mapping[str, Any]]]:
  """``(group, entry)`` pairs of an :func:`evaluate_subgroups` report in its ``order``."""
  groups = report["groups"]
  return [(g, groups[g]) for g in report.get("order", list(groups))]


def subgroup_rows(reports: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
  """Flattens :func:`evaluate_subgroups` outputs into rows with ``CSV_COLUMNS``."""
  rows = []
  for rep in reports:
    for group, g in ordered_groups(rep):
      per_class = g["result"]["per_class"]
      for row in task_metrics.metrics_rows(g["result"]):
        counts = per_class.get(row["class"], {})
        rows.append({**row, "column": rep["column"], "group": group,
                     "num_examples": g["num_examples"], "num_patients": g["num_patients"],
                     "num_positive": counts.get("num_positive", ""),
                     "num_negative": counts.get("num_negative", ""),
                     "interval": int(g["interval"]), "flags": "; ".join(g["flags"])})
  return rows


def write_subgroups(reports: Sequence[Mapping[str, Any]], json_path: str, csv_path: str
                    ) -> None:
  """Writes the reports as JSON (a list, one entry per column) and a flat CSV, atomically."""
  io_utils.atomic_write_json(json_path, list(reports))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                          lineterminator="\n")
  writer.writeheader()
  for row in subgroup_rows(reports):
    writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in CSV_COLUMNS})
  io_utils.atomic_write_text(csv_path, buf.getvalue())
