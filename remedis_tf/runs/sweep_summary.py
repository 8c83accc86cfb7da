"""The summary of a data-efficiency sweep (:mod:`remedis_tf.runs.sweep`): the table over
seeds, the two-level bootstrap over test patients and seeds
(:mod:`remedis_tf.eval.resampling`), the headline, the plot, and the sweep's findings
(paired differences between the models per fraction and the reference model's learning
curve, :mod:`remedis_tf.eval.findings`) in ``findings.json``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import data_efficiency as de
from remedis_tf.eval import findings as findings_lib
from remedis_tf.eval import plots
from remedis_tf.eval import predict as predict_lib
from remedis_tf.eval import resampling
from remedis_tf.eval.result_store import ResultStore

PREDICTIONS_FILE = "test_predictions.npz"
FINDINGS_FILE = "findings.json"


@dataclasses.dataclass
class SweepResult:
  """What :func:`run_data_efficiency` did and produced.

  Attributes:
    computed: cells trained and evaluated by this call.
    skipped: cells already in the store (not recomputed).
    table: aggregated rows (all finished cells in the store).
    headline: the headline fraction, or None when it cannot be computed (reason in
      ``headline_note``).
    metric: the metric tabulated.
    files: name → path of the written outputs.
    interrupted: True when a cell's training was preempted (run again to resume).
    headline_interval: :func:`remedis_tf.eval.resampling.headline_interval` result, or
      None when the two-level bootstrap could not run (note in ``interval_note``).
    combined: per (model, fraction) :class:`remedis_tf.eval.resampling.CombinedRow`
      (mean, per-seed values, seed × test interval); empty when not computed.
    replicates: the two-level bootstrap replicates behind ``combined`` (paired findings).
  """
  computed: List[de.Cell]
  skipped: List[de.Cell]
  table: List[de.AggregateRow]
  headline: Optional[de.Headline]
  headline_note: str
  metric: str
  files: Dict[str, str]
  interrupted: bool = False
  headline_interval: Optional[Dict[str, Any]] = None
  interval_note: str = ""
  combined: List[resampling.CombinedRow] = dataclasses.field(default_factory=list)
  replicates: Optional[resampling.Replicates] = None



def combined_from_store(store: ResultStore, metric_name: str, num_bootstrap: int,
                        seed: int) -> Tuple[Optional[resampling.Replicates], str]:
  """Two-level bootstrap replicates of every stored cell, or ``(None, reason)``."""
  if num_bootstrap < 1:
    return None, "no bootstrap requested"
  if metric_name not in ("mean_auc", "top1_accuracy"):
    return None, f"the seed x test bootstrap supports mean_auc/top1_accuracy, not {metric_name}"
  scores, ref = {}, None
  for cell in store.cells():
    entry = store.get(cell) or {}
    path = os.path.join(entry.get("run_dir", ""), PREDICTIONS_FILE)
    if not entry.get("run_dir") or not tf.io.gfile.exists(path):
      return None, f"no saved test predictions for {cell.key()}"
    data = predict_lib.load_predictions(path)
    if ref is None:
      ref = data
    elif not np.array_equal(ref["patients"], data["patients"]):
      return None, f"cell {cell.key()} was tested on other images"
    scores[cell.key()] = data["scores"]
  try:
    reps = resampling.replicates(scores, ref["labels"], ref["mask"], ref["patients"],
                                 str(ref["task"]), num_bootstrap, seed)
  except (ConfigError, DataError) as e:
    return None, str(e)
  return reps, ""


def write_findings(out_dir: str, reps: resampling.Replicates, metric_name: str,
                   reference_model: str, candidate_model: str, protocol: Dict[str, Any],
                   site: str = "new_site", arm: str = "finetune") -> str:
  """``out_dir/findings.json`` of a sweep (:func:`findings_lib.sweep_findings` and the
  reference model's learning curve from its smallest fraction to its largest)."""
  found = findings_lib.sweep_findings(reps, metric_name, site, arm, reference_model,
                                      candidate_model)
  fractions = sorted(f for m, f in reps.cells() if m == reference_model)
  curve = (findings_lib.learning_curve(reps, reference_model, fractions[0], fractions[-1])
           if len(fractions) > 1 else None)
  path = os.path.join(out_dir, FINDINGS_FILE)
  io_utils.atomic_write_json(path, findings_lib.document(protocol, found, curve))
  return path


def _summarise(store: ResultStore, out_dir: str, computed, skipped, metric,
               reference_model, candidate_model, reference_fraction, interrupted, log,
               num_bootstrap: int = 0, bootstrap_seed: int = 0,
               protocol: Optional[Dict[str, Any]] = None) -> SweepResult:
  rows = store.rows("metric")
  names = {(store.get(c) or {}).get("metric_name") for c in store.cells()}
  metric_name = metric or (sorted(n for n in names if n)[0] if any(names) else "metric")
  files: Dict[str, str] = {}
  table = de.aggregate(rows) if rows else []
  headline, note = None, ""
  interval, interval_note, combined = None, "", []
  if table:
    reps, interval_note = combined_from_store(store, metric_name, num_bootstrap,
                                              bootstrap_seed)
    if reps is not None:
      n_train = {(r.model, r.fraction): r.n_train for r in table}
      combined = resampling.combined_rows(reps, n_train=n_train)
      table = [c.to_aggregate() for c in combined]
      try:
        interval = resampling.headline_interval(reps, reference_model, candidate_model,
                                                reference_fraction)
        files["findings"] = write_findings(out_dir, reps, metric_name, reference_model,
                                           candidate_model, protocol or {})
      except ConfigError as e:
        interval_note = str(e)
    else:
      log(f"[sweep] intervals: Student-t over seeds ({interval_note})")
    try:
      headline = de.headline_fraction(table, reference_model, candidate_model,
                                      reference_fraction)
    except ConfigError as e:
      note = str(e)
    files["table_csv"] = os.path.join(out_dir, "table.csv")
    files["table_md"] = os.path.join(out_dir, "table.md")
    de.write_table(table, files["table_csv"], files["table_md"], metric_name, headline)
    files["headline"] = os.path.join(out_dir, "headline.json")
    io_utils.atomic_write_json(files["headline"], {
        **(headline.to_dict() if headline else {"reached": None, "note": f"no headline: {note}"}),
        "interval": interval, "interval_note": interval_note})
    files["plot"] = plots.plot_data_efficiency(
        table, os.path.join(out_dir, "data_efficiency.png"), metric_name,
        reference_model=reference_model, reference_fraction=reference_fraction,
        headline=headline, title="data-efficient generalisation")
    line = headline.summary if headline else "no headline: " + note
    log(f"[sweep] {resampling.format_headline(interval) if interval else line}")
    log(f"[sweep] wrote {files['table_md']}, {files['headline']}, {files['plot']}")
  return SweepResult(computed, skipped, table, headline, note, metric_name, files, interrupted,
                     interval, interval_note, combined, reps)
