"""Report sections for what clinical reviewers ask for: calibration and subgroups.

Built from the files :func:`remedis_tf.runs.evaluate.evaluate_model` writes
(``<set>_calibration.json``, ``<set>_reliability.png``, ``<set>_subgroups.json``), so any
caller with evaluation folders (the demo, a user's own report) gets the same tables.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.eval import report, subgroups


def _files(eval_dirs: Mapping[str, str], set_names: Sequence[str], suffix: str
           ) -> Iterator[Tuple[str, str, str, Any]]:
  """``(model, set, out_dir, parsed JSON)`` for each ``<set><suffix>.json`` that exists."""
  for model, out_dir in eval_dirs.items():
    for set_name in set_names:
      path = os.path.join(out_dir, f"{set_name}{suffix}.json")
      if tf.io.gfile.exists(path):
        yield model, set_name, out_dir, io_utils.read_json(path)


def _section(title: str, kind: str, rows: List[Dict[str, Any]], intro: str,
             notes: Sequence[Any] = (), images: Sequence[Any] = ()) -> report.Section:
  """Intro, notes, the table, images; one line saying no files were found when ``rows``
  is empty."""
  if not rows:
    return report.Section(title, blocks=[f"No {kind} files were written."])
  return report.Section(title, blocks=[intro, *notes, report.Table(rows=rows), *images])


def calibration_section(eval_dirs: Mapping[str, str], set_names: Sequence[str],
                        images_for: Sequence[str] = ()) -> report.Section:
  """ECE before/after temperature scaling per model, set and finding.

  Args:
    eval_dirs: ``{model name: evaluate_model out_dir}``.
    set_names: sets to tabulate (missing files are skipped).
    images_for: sets whose reliability diagrams are embedded.
  """
  rows: List[Dict[str, Any]] = []
  notes: List[str] = []
  images: List[report.Image] = []
  num_bins = None
  noted = set()
  for model, set_name, out_dir, cal in _files(eval_dirs, set_names, "_calibration"):
    num_bins = cal["num_bins"]
    temps = cal.get("temperature") or {}
    if model not in noted:
      noted.add(model)
      fallback = cal.get("fallback") or {}
      notes.append(f"{model}: temperatures {cal['source']}"
                   + (f", {cal.get('scope')}" if cal.get("scope") else "") + ": "
                   + (", ".join(f"{k} {v:.3f}" for k, v in temps.items()) or "none") + "."
                   + "".join(f" {k}: not fitted, {why}; T = 1." for k, why in fallback.items()))
    for target, entry in cal["targets"].items():
      rows.append({"model": model, "set": set_name, "finding": target,
                   "n": entry["num_examples"], "T": temps.get(target),
                   "ECE, T = 1 [95% CI]": entry["ece_before"],
                   "ECE, scaled [95% CI]": entry.get("ece_after")})
    png = os.path.join(out_dir, f"{set_name}_reliability.png")
    if set_name in images_for and tf.io.gfile.exists(png):
      images.append(report.Image(png, caption=f"{model}, {set_name}: reliability diagram"))
  intro = (f"Expected calibration error (ECE) over {num_bins} equal-width probability bins "
           "on [0, 1] (empty bins skipped), per finding, with patient-level bootstrap 95% "
           "CIs, before (T = 1) and after temperature scaling. The temperatures were fitted "
           "on the validation set by minimising the negative log-likelihood, one per "
           "finding for multi-label and binary tasks (AUC and the operating points do not "
           "change), one per model for multi-class (accuracy does not change). ECE is biased "
           "upwards on small sets, and bootstrap resamples add to that bias, so an interval "
           "can lie above its estimate. Compare before and after on the same set.")
  return _section("Calibration", "calibration", rows, intro, notes, images)


def subgroup_section(eval_dirs: Mapping[str, str], set_names: Sequence[str],
                     metric: str = "mean_auc") -> report.Section:
  """``metric`` with its CI per subgroup, with sizes, positives per finding and flags."""
  rows: List[Dict[str, Any]] = []
  specs, min_patients = [], None
  for model, set_name, _, reports in _files(eval_dirs, set_names, "_subgroups"):
    for rep in reports or ():
      if rep["spec"] not in specs:
        specs.append(rep["spec"])
      min_patients = rep["min_patients"]
      for group, g in subgroups.ordered_groups(rep):
        result = g["result"]
        positives = ", ".join(f"{k} {v['num_positive']}"
                              for k, v in result["per_class"].items())
        rows.append({"model": model, "set": set_name, "column": rep["column"],
                     "group": group, "images": g["num_examples"],
                     "patients": g["num_patients"], "positives": positives,
                     f"{metric} [95% CI]": result["metrics"].get(metric),
                     "flags": "; ".join(g["flags"]) or "-"})
  intro = (f"Subgroup columns {', '.join(f'`{s}`' for s in specs)} (numeric columns cut "
           "into left-closed bands). Each subgroup is scored on its own images with the "
           "operating points chosen on the whole validation set; intervals are "
           "patient-level bootstrap 95% CIs within the subgroup. Subgroups with fewer than "
           f"{min_patients} patients get no interval, and a finding without positives or "
           "negatives in a subgroup has no AUC there; both are flagged. Every metric "
           "(per-finding AUC, sensitivity, specificity) is in `<set>_subgroups.csv`.")
  return _section("Subgroups", "subgroup", rows, intro)
