"""Evaluating a trained classifier on named evaluation sets (ID and zero-shot OOD).

The model is any source :func:`remedis_tf.runs.classifier.load_model` takes: a
fine-tuning run directory (its ``best/`` checkpoint by default, evaluated with the run's
own eval centre crop), a classifier Keras preset or a classifier SavedModel.

Calibration: a run directory's model-selection checkpoint comes with temperatures fitted
on its validation set (``best/temperature.json``); the model's probabilities are then
``act(logits / T)``. Each
evaluated set gets ``<set>_calibration.json`` and ``<set>_reliability.png``: ECE with
patient-level CIs and reliability curves before (T = 1) and after scaling. The
temperatures are the model's own when it has them, else fitted here on ``val_set`` (then
recorded as not saved with the model), else only the unscaled curves are reported.

Subgroups: ``subgroups=["Sex", "Age:40,60,80", "view"]`` (columns the manifests keep in
``Record.attributes``, or ``view`` / ``site``) writes ``<set>_subgroups.json|.csv``:
every metric per subgroup with patient-level CIs, sizes and flags (see
:mod:`remedis_tf.eval.subgroups`).

Zero-shot OOD evaluation is the ID-trained model evaluated on another site's set: give
the sets names such as ``id_test`` and ``ood_site_b``.

Operating point (the threshold behind sensitivity/specificity; AUC does not depend on
it). Rules, per class, chosen on the validation set named by ``val_set``:

* ``"youden"`` (default) — the threshold maximising Youden's J = sensitivity +
  specificity − 1 on the ROC curve (ties → the highest such threshold, i.e. the most
  specific operating point);
* ``"sensitivity:0.9"`` — the largest threshold whose sensitivity is ≥ 0.9 (screening
  use); ``"specificity:0.9"`` likewise for specificity;
* a number such as ``"0.5"`` — that fixed threshold for every class (no validation set
  needed).

Without ``val_set`` a rule falls back to 0.5 (recorded in the summary). A class whose
threshold cannot be chosen (no positives or no negatives in the validation set) also gets
0.5. The validation set's own sensitivity/specificity at a threshold chosen on it are
optimistic; report test sets.

Outputs in ``out_dir`` (each file written atomically, and only after every set has been
predicted and scored, so a failing run leaves earlier results untouched):
``<set>.json`` / ``<set>.csv`` (all metrics with bootstrap CIs, see
:func:`remedis_tf.eval.task_metrics.write_metrics`), ``<set>_predictions.csv``
(per-image scores), the calibration and subgroup files above, ``summary.json`` and
``summary.csv`` (one row per set: the main metric with its CI).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from remedis_tf import io_utils
from remedis_tf.data.label_alignment import align_labels, missing_labels
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import calibration as calibration_lib
from remedis_tf.eval import predict as predict_lib
from remedis_tf.eval import reliability_plot
from remedis_tf.eval import subgroups as subgroups_lib
from remedis_tf.eval import task_metrics
from remedis_tf.eval import thresholds as thresholds_lib
from remedis_tf.runs import classifier as classifier_lib

SUMMARY_COLUMNS = ("set", "metric", "value", "lower", "upper", "num_undefined", "num_examples",
                   "num_patients", "role")
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RESERVED_NAMES = ("summary",)
# Per-set output files are <set><suffix>.*, so a set name must not end in one.
_SUFFIXES = ("_predictions", "_calibration", "_reliability", "_subgroups")




# ---------------------------------------------------------------------------- evaluation


def check_set_names(names: Sequence[str]) -> None:
  """Set names become file names: letters, digits, ``_.-``; not ``summary``."""
  for name in names:
    if not _SET_NAME.match(name) or name in _RESERVED_NAMES or name.endswith(_SUFFIXES):
      raise ConfigError(f"evaluation set name {name!r}: use letters, digits, '_', '.', '-' "
                        f"(not {', '.join(_RESERVED_NAMES)} or ending in "
                        f"{', '.join(_SUFFIXES)})")


def _predictions_csv(preds: predict_lib.Predictions, label_names: Sequence[str]) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["id", "patient"] + [f"score:{n}" for n in label_names]
                  + [f"label:{n}" for n in label_names] + [f"mask:{n}" for n in label_names])
  for i in range(preds.ids.shape[0]):
    writer.writerow([preds.ids[i], preds.patients[i]]
                    + [f"{v:.9g}" for v in preds.scores[i]]
                    + [f"{v:g}" for v in preds.labels[i]] + [f"{v:g}" for v in preds.mask[i]])
  return buf.getvalue()


def evaluate_model(model_source: str, eval_sets: Mapping[str, Manifest], out_dir: str,
                   num_bootstrap: int = 1000, operating_point: Any = "youden",
                   val_set: Optional[str] = None, batch_size: int = 64, seed: int = 0,
                   which: str = "best", metric: Optional[str] = None,
                   confidence: float = 0.95, save_predictions: bool = True,
                   log: Callable[[str], None] = print, subgroups: Sequence[Any] = (),
                   subgroup_min_patients: int = subgroups_lib.DEFAULT_MIN_PATIENTS,
                   calibration_bins: int = calibration_lib.DEFAULT_NUM_BINS
                   ) -> Dict[str, Any]:
  """Evaluates one classifier on several named sets and writes the results.

  Args:
    model_source: fine-tuning run directory, classifier preset or classifier SavedModel
      (:func:`remedis_tf.runs.classifier.load_model`).
    eval_sets: ``{name: Manifest}``; names become file names (``id_test``,
      ``ood_site_b``, ...). Label columns are matched to the model's by name; a
      multi-label or binary set that lacks some of the model's labels is scored on the
      labels it has (the others are logged and listed as ``missing_labels`` in its
      summary row and metrics JSON; its mean AUC averages the shared labels only).
    out_dir: output folder (local or ``gs://``).
    num_bootstrap: patient-level bootstrap resamples for the CIs (0 = no CIs).
    operating_point: ``youden`` | ``sensitivity:T`` | ``specificity:T`` | a threshold.
    val_set: name of the set (in ``eval_sets``) the operating point is chosen on.
    batch_size: prediction batch size.
    seed: bootstrap seed.
    which: ``best`` or ``latest`` checkpoint of a run directory.
    metric: the summary's main metric (default mean AUC / top-1 accuracy).
    confidence: CI coverage.
    save_predictions: also write ``<set>_predictions.csv``.
    log: progress lines.
    subgroups: subgroup column specs (``"Sex"``, ``"Age:40,60,80"``, ``"view"``; see
      :mod:`remedis_tf.eval.subgroups`); the manifests must keep those columns.
    subgroup_min_patients: subgroups with fewer patients get no interval (flagged).
    calibration_bins: equal-width ECE / reliability bins; 0 = no calibration report.

  Returns:
    The summary dict also written to ``summary.json``: ``{"model", "model_kind",
    "checkpoint", "task", "label_names", "operating_point": {...}, "sets": {name: {"metric",
    "value", "lower", "upper", "num_undefined", "num_examples", "num_patients", "role",
    "source", "missing_labels"}},
    "calibration": {"temperature", "source", "num_bins", "scope", "fallback"}, "subgroups":
    [spec, ...]}`` (``fallback``: ``{finding: reason}`` for temperatures left at T = 1,
    see :mod:`remedis_tf.eval.calibration`);
    ``num_undefined`` counts the bootstrap resamples where the metric was undefined (for
    mean AUC: some class without positives or negatives), which the CI leaves out.
  """
  if not eval_sets:
    raise ConfigError("no evaluation sets given")
  check_set_names(list(eval_sets))
  if val_set is not None and val_set not in eval_sets:
    raise ConfigError(f"val_set {val_set!r} is not one of the evaluation sets "
                      f"{sorted(eval_sets)}")
  op = thresholds_lib.parse_operating_point(operating_point)
  specs = subgroups_lib.parse_subgroup_specs(subgroups)
  if calibration_bins < 0:
    raise ConfigError(f"calibration_bins must be >= 0, got {calibration_bins}")
  model = classifier_lib.load_model(model_source, which)
  log(f"[evaluate] model {model_source} ({model.kind}; {model.task}, labels "
      f"{list(model.label_names)}, {model.image_size} px)")
  aligned = {name: align_labels(m, model.label_names, model.task, name, allow_missing=True)
             for name, m in eval_sets.items()}
  # A set without some of the model's labels is scored on the labels it has.
  names = {name: list(m.label_names) for name, m in aligned.items()}
  missing = {name: missing_labels(m, model.label_names) for name, m in aligned.items()}
  for name, lacking in missing.items():
    if lacking:
      log(f"[evaluate] {name}: no labels for {lacking} in {aligned[name].source}; scoring "
          f"its {len(names[name])} shared label(s) {names[name]} (its mean is over these "
          "only)")
  # Subgroup columns are checked before any prediction runs.
  group_values = {name: {s.column: subgroups_lib.subgroup_values(m, s) for s in specs}
                  for name, m in aligned.items()}
  preds: Dict[str, predict_lib.Predictions] = {}
  for name, manifest in aligned.items():
    log(f"[evaluate] predicting {name}: {len(manifest)} images from {manifest.source}")
    preds[name] = _columns(model.predict(manifest, batch_size=batch_size,
                                         keep=("scores", "logits")),
                           [list(model.label_names).index(n) for n in names[name]])
    if specs and list(preds[name].ids) != [r.example_id for r in manifest.records]:
      raise DataError(f"evaluation set {name!r}: predictions are not in manifest order")

  op_info: Dict[str, Any] = {"rule": op.describe()}
  thresholds: Optional[Dict[str, float]] = None
  if model.task != "multiclass":
    if op.rule == "fixed":
      thresholds, notes = thresholds_lib.choose_thresholds(op, None, None, None,
                                                           model.label_names)
      op_info["chosen_on"] = None
    elif val_set is None:
      thresholds = {n: 0.5 for n in model.label_names}
      notes = [f"no validation set named: rule {op.describe()} not applied, fixed 0.5"]
      op_info["chosen_on"] = None
    else:
      p = preds[val_set]
      thresholds, notes = thresholds_lib.choose_thresholds(op, p.labels, p.scores, p.mask,
                                                           names[val_set])
      for n in missing[val_set]:
        thresholds[n] = 0.5
        notes.append(f"{n}: not labelled in {val_set}, fixed 0.5")
      thresholds = {n: thresholds[n] for n in model.label_names}
      op_info["chosen_on"] = val_set
    op_info["thresholds"] = thresholds
    op_info["notes"] = notes
    for note in notes:
      log(f"[evaluate] operating point: {note}")
  else:
    op_info["notes"] = ["multi-class task: no thresholded metrics"]

  temp_record, temp_source = model.temperature, "saved with the model"
  if temp_record is None and val_set is not None and calibration_bins:
    p = preds[val_set]
    fit = calibration_lib.fit_temperature(model.task, p.logits, p.labels, p.mask,
                                          names[val_set])
    for n in missing[val_set]:
      fit["temperature"][n] = 1.0
      fit["fallback"][n] = f"not labelled in {val_set}"
    fit["temperature"] = {n: fit["temperature"][n] for n in model.label_names}
    temp_record = calibration_lib.temperature_record(model.task, model.label_names, fit,
                                                     aligned[val_set].source)
    temp_source = f"fitted on {val_set} by this evaluation (not saved with the model)"
  elif temp_record is None:
    temp_source = "none (no temperature saved with the model and no val_set)"
  for line in calibration_lib.fallback_warnings(temp_record):
    log(f"[calibration] WARNING: {line} (temperatures {temp_source})")
  temps = {name: None if temp_record is None else
           calibration_lib.temperature_vector(temp_record, names[name]) for name in preds}
  calib_info = {"num_bins": int(calibration_bins), "source": temp_source,
                "temperature": None if temp_record is None else temp_record["temperature"],
                "scope": None if temp_record is None else temp_record.get("scope"),
                "fallback": None if temp_record is None else temp_record.get("fallback", {})}

  results: Dict[str, Dict[str, Any]] = {}
  calib_reports: Dict[str, Dict[str, Any]] = {}
  subgroup_reports: Dict[str, List[Dict[str, Any]]] = {}
  sets_summary: Dict[str, Dict[str, Any]] = {}
  for name, p in preds.items():
    kwargs = ({"operating_point": {n: thresholds[n] for n in names[name]}}
              if thresholds is not None else {})
    boot = dict(num_bootstrap=num_bootstrap, confidence=confidence, seed=seed)
    if calibration_bins:
      calib_reports[name] = {**calibration_lib.calibration_report(
          model.task, p.labels, p.logits, p.mask, names[name], temps[name], p.patients,
          num_bins=calibration_bins, **boot), **calib_info, "set": name}
    subgroup_reports[name] = [subgroups_lib.evaluate_subgroups(
        model.task, p.labels, p.scores, p.mask, p.patients, group_values[name][s.column], s,
        names[name], subgroup_min_patients, **boot, **kwargs) for s in specs]
    result = task_metrics.evaluate_predictions(
        model.task, p.labels, p.scores, p.mask, patients=p.patients,
        label_names=names[name], num_bootstrap=num_bootstrap,
        confidence=confidence, seed=seed, logits=p.logits, **kwargs)
    result["set"] = name
    result["missing_labels"] = missing[name]
    result["source"] = aligned[name].source
    result["model"] = model_source
    result["operating_point"] = op_info
    results[name] = result
    metric_name, ci = task_metrics.main_metric(result, metric)
    role = "validation (operating point chosen here)" if name == op_info.get("chosen_on") else ""
    sets_summary[name] = {"metric": metric_name, "value": ci["value"], "lower": ci["lower"],
                          "upper": ci["upper"], "num_undefined": ci.get("num_undefined", 0),
                          "num_examples": result["num_examples"],
                          "num_patients": result["num_patients"], "role": role,
                          "source": aligned[name].source, "missing_labels": missing[name]}
    undefined = ci.get("num_undefined", 0)
    log(f"[evaluate] {name}: {metric_name} {_fmt(ci)} ({result['num_examples']} images"
        + (f"; undefined in {undefined} of {num_bootstrap} resamples, left out of the CI"
           if undefined else "") + ")")

  summary = {"model": model_source, "model_kind": model.kind,
             "checkpoint": model.info.get("restored_checkpoint", ""),
             "task": model.task, "label_names": list(model.label_names),
             "image_size": model.image_size, "num_bootstrap": int(num_bootstrap),
             "confidence": confidence, "operating_point": op_info, "sets": sets_summary,
             "calibration": calib_info, "subgroups": [s.describe() for s in specs],
             "subgroup_min_patients": int(subgroup_min_patients)}
  # Everything is computed: only now touch out_dir.
  for name, result in results.items():
    task_metrics.write_metrics(result, os.path.join(out_dir, f"{name}.json"),
                              os.path.join(out_dir, f"{name}.csv"))
    if name in calib_reports:
      io_utils.atomic_write_json(os.path.join(out_dir, f"{name}_calibration.json"),
                                 calib_reports[name])
      if any(t.get("bins_before") for t in calib_reports[name]["targets"].values()):
        reliability_plot.plot_reliability(calib_reports[name],
                                          os.path.join(out_dir, f"{name}_reliability.png"),
                                          title=f"{name}: reliability ({temp_source})")
    if specs:
      subgroups_lib.write_subgroups(subgroup_reports[name],
                                    os.path.join(out_dir, f"{name}_subgroups.json"),
                                    os.path.join(out_dir, f"{name}_subgroups.csv"))
    if save_predictions:
      io_utils.atomic_write_text(os.path.join(out_dir, f"{name}_predictions.csv"),
                                 _predictions_csv(preds[name], names[name]))
  io_utils.atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
  io_utils.atomic_write_text(os.path.join(out_dir, "summary.csv"), _summary_csv(sets_summary))
  log(f"[evaluate] wrote {out_dir}/summary.json")
  return summary


def _columns(preds: predict_lib.Predictions, columns: Sequence[int]
             ) -> predict_lib.Predictions:
  """``preds`` with only the model outputs ``columns`` (the set's labels, in its order)."""
  if list(columns) == list(range(preds.scores.shape[1])):
    return preds
  take = lambda a: None if a is None else a[:, list(columns)]  # noqa: E731
  return dataclasses.replace(preds, scores=take(preds.scores), logits=take(preds.logits))


def _fmt(ci: Mapping[str, Any]) -> str:
  value, lo, hi = ci.get("value"), ci.get("lower"), ci.get("upper")
  if value is None:
    return "n/a"
  return f"{value:.4f}" + (f" [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else "")


def _summary_csv(sets_summary: Mapping[str, Mapping[str, Any]]) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(SUMMARY_COLUMNS)
  for name, row in sets_summary.items():
    writer.writerow([name] + ["" if row.get(c) is None else row.get(c)
                              for c in SUMMARY_COLUMNS[1:]])
  return buf.getvalue()
