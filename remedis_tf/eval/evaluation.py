"""Evaluating a trained classifier on named evaluation sets (ID and zero-shot OOD).

A *model source* is either

* a fine-tuning run directory written by :func:`remedis_tf.stages.run_supervised`
  (``config.json`` + checkpoints; the model-selection checkpoint in ``best/`` is used by
  default),
* a classifier Keras preset written by :func:`export_classifier_preset`
  (``remedis_tf.weights.preset``: ``config.json`` with label names, task and image size,
  ``metadata.json``, ``model.weights.h5``), or
* a classifier SavedModel written by :func:`export_classifier_savedmodel`: a
  ``tf.Module`` whose ``__call__(images)`` maps float32 ``[B,H,W,3]`` images in [0,1] to
  probabilities ``[B,K]`` (sigmoid for multi-label/binary, softmax for multi-class), plus
  ``embed(images) -> [B,C]`` and ``logits(images) -> [B,K]``; a JSON sidecar
  (:data:`SIDECAR_FILE`) inside the directory records label names, task and image size.

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
:func:`remedis_tf.eval.metrics.write_metrics`), ``<set>_predictions.csv`` (per-image scores),
``summary.json`` and ``summary.csv`` (one row per set: the main metric with its CI).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import CheckpointError, ConfigError, DataError
from remedis_tf.eval import metrics as metrics_lib
from remedis_tf.eval import predict as predict_lib
from remedis_tf.models.classifier import Classifier
from remedis_tf.weights import preset as preset_lib

SIDECAR_FILE = "remedis_classifier.json"
SIDECAR_FORMAT = "remedis_tf.classifier_savedmodel"
SUMMARY_COLUMNS = ("set", "metric", "value", "lower", "upper", "num_examples", "num_patients",
                   "role")
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RESERVED_NAMES = ("summary",)


# ------------------------------------------------------------------------------ models


@dataclasses.dataclass
class LoadedClassifier:
  """A classifier ready to predict, whatever it was loaded from.

  Attributes:
    source: the model source string.
    kind: ``"run_dir"``, ``"preset"`` or ``"savedmodel"``.
    label_names: K output names, in output order.
    task: ``multilabel`` | ``binary`` | ``multiclass``.
    image_size: side of the square input images the model was trained at.
    crop_fraction: evaluation centre crop applied before resizing.
    forward: ``images [B,S,S,3] in [0,1] -> {"scores": [B,K] probabilities,
      "embedding": [B,C]}``.
    info: provenance (restored checkpoint, run config or sidecar contents).
  """
  source: str
  kind: str
  label_names: Tuple[str, ...]
  task: str
  image_size: int
  crop_fraction: float
  forward: Callable[[tf.Tensor], Dict[str, tf.Tensor]]
  info: Dict[str, Any]

  def predict(self, manifest: Manifest, batch_size: int = 64,
              keep: Tuple[str, ...] = ("scores",)) -> predict_lib.Predictions:
    """Runs the model over ``manifest`` (evaluation preprocessing) in manifest order."""
    return predict_lib.predict(self.forward, manifest, self.image_size, batch_size=batch_size,
                               crop_fraction=self.crop_fraction, keep=keep)


def is_classifier_savedmodel(path: str) -> bool:
  """True when ``path`` is a directory written by :func:`export_classifier_savedmodel`."""
  return (tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))
          and tf.io.gfile.exists(os.path.join(path, SIDECAR_FILE)))


def read_sidecar(path: str) -> Dict[str, Any]:
  """The JSON sidecar of a classifier SavedModel (DataError when it is not one)."""
  sidecar = os.path.join(path, SIDECAR_FILE)
  try:
    info = io_utils.read_json(sidecar)
  except (tf.errors.OpError, ValueError) as e:
    raise CheckpointError(f"{sidecar}: unreadable classifier sidecar ({e})") from None
  if info.get("format") != SIDECAR_FORMAT:
    raise CheckpointError(f"{sidecar}: format is {info.get('format')!r}, expected "
                          f"{SIDECAR_FORMAT!r}")
  return info


def load_model(model_source: str, which: str = "best") -> LoadedClassifier:
  """Loads a classifier from a fine-tuning run directory or a classifier SavedModel.

  Args:
    model_source: run directory (``config.json`` of a supervised run), a classifier preset
      (:func:`export_classifier_preset`) or a directory written by
      :func:`export_classifier_savedmodel`.
    which: for run directories, ``best`` (model-selection checkpoint, falling back to the
      latest when the run had no validation set) or ``latest``.
  """
  if which not in ("best", "latest"):
    raise ConfigError(f"which must be 'best' or 'latest', got {which!r}")
  if not model_source:
    raise ConfigError("no model given: pass a fine-tuning run directory or a classifier "
                      "SavedModel")
  if is_classifier_savedmodel(model_source):
    info = read_sidecar(model_source)
    module = tf.saved_model.load(model_source)

    def forward(images):
      images = tf.cast(images, tf.float32)
      return {"scores": module(images), "embedding": module.embed(images)}

    return LoadedClassifier(model_source, "savedmodel", tuple(info["label_names"]),
                            info["task"], int(info["image_size"]),
                            float(info.get("crop_fraction", 0.875)), forward, info)
  if preset_lib.is_preset(model_source):
    return _load_preset_classifier(model_source)
  if tf.io.gfile.exists(os.path.join(model_source, "saved_model.pb")):
    raise ConfigError(f"{model_source} is a SavedModel without a {SIDECAR_FILE} sidecar "
                      "(a backbone, not a classifier); evaluate a fine-tuning run or a model "
                      "exported with export_classifier_savedmodel")
  from remedis_tf import stages  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(os.path.join(model_source, "config.json")):
    raise ConfigError(f"{model_source} is neither a fine-tuning run directory (no config.json)"
                      " nor a classifier SavedModel")
  task, run_config = stages.load_classifier(model_source, which=which)
  return LoadedClassifier(model_source, "run_dir", tuple(task.manifest.label_names),
                          task.manifest.task, int(task.image_size), 0.875,
                          _task_forward(task), run_config)


def _load_preset_classifier(path: str) -> LoadedClassifier:
  info = preset_lib.preset_info(path)
  if info["class_name"] != "Classifier" or not info.get("label_names") or not info.get("task"):
    raise ConfigError(f"{path} is a {info['class_name']} preset without label names/task (a "
                      "backbone, not a classifier); evaluate a classifier preset written by "
                      "export_classifier_preset")
  model = preset_lib.from_preset(path)
  multiclass = info["task"] == "multiclass"

  def forward(images):
    out = model(tf.cast(images, tf.float32), training=False)
    logits = tf.cast(out["logits"], tf.float32)
    return {"scores": tf.nn.softmax(logits, axis=-1) if multiclass else tf.sigmoid(logits),
            "embedding": tf.cast(out["embedding"], tf.float32)}

  if not info.get("image_size"):
    raise ConfigError(f"{path}/{preset_lib.CONFIG_FILE}: a classifier preset needs image_size")
  return LoadedClassifier(path, "preset", tuple(info["label_names"]), info["task"],
                          int(info["image_size"]), float(info.get("crop_fraction") or 0.875),
                          forward, info)


def export_classifier_preset(task, out_dir: str, source: str = "",
                             crop_fraction: float = 0.875) -> str:
  """Writes a trained ``SupervisedTask`` as a Keras classifier preset folder.

  ``config.json`` records the backbone variant, the projection layer the head reads, the
  head size, ``label_names``, ``task``, ``image_size`` and ``crop_fraction``;
  ``model.weights.h5`` holds backbone + (projection head) + classification head. Load it
  with :func:`remedis_tf.weights.preset.from_preset` (a :class:`Classifier` returning
  ``{"logits", "embedding"}``) or evaluate it with :func:`load_model`. Returns ``out_dir``.
  """
  if task.classification_head is None:
    raise ConfigError("export_classifier_preset needs a built SupervisedTask")
  model = Classifier(task.backbone, task.classification_head, task.projection_head,
                     int(task.config.from_projection_layer))
  return preset_lib.save_to_preset(model, out_dir, image_size=int(task.image_size),
                                   label_names=list(task.manifest.label_names),
                                   task=task.manifest.task, crop_fraction=float(crop_fraction),
                                   source=source)


def _task_forward(task) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  def forward(images):
    out = task.forward(images, training=False)
    return {"scores": tf.cast(task.scores_from_logits(tf.cast(out["logits"], tf.float32)),
                              tf.float32),
            "embedding": tf.cast(out["embedding"], tf.float32)}
  return forward


class _ClassifierModule(tf.Module):
  """Holds the inference layers so ``tf.saved_model.save`` tracks their variables."""

  def __init__(self, task):
    super().__init__(name="remedis_classifier")
    self.backbone = task.backbone
    self.classification_head = task.classification_head
    if task.projection_head is not None:
      self.projection_head = task.projection_head


def export_classifier_savedmodel(task, out_dir: str, source: str = "",
                                 crop_fraction: float = 0.875) -> str:
  """Writes a trained ``SupervisedTask`` as a self-describing classifier SavedModel.

  The SavedModel's root has ``__call__(images)`` → probabilities ``[B,K]`` float32,
  ``embed(images)`` → the features the head reads ``[B,C]``, ``logits(images)`` →
  ``[B,K]``, all on float32 ``[B,H,W,3]`` images in [0,1] (any H, W ≥ 32; train size in
  the sidecar), and a ``serving_default`` signature returning all three. The sidecar
  :data:`SIDECAR_FILE` holds ``label_names``, ``task``, ``image_size``, ``variant`` and the
  preprocessing. Written into a temporary sibling and renamed into place; an existing
  directory that is not a classifier SavedModel is never replaced. Returns ``out_dir``.
  """
  if task.classification_head is None:
    raise ConfigError("export_classifier_savedmodel needs a built SupervisedTask")
  module = _ClassifierModule(task)
  spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
  forward = _task_forward(task)

  def logits_fn(images):
    return tf.cast(task.forward(images, training=False)["logits"], tf.float32)

  module.__call__ = tf.function(lambda images: forward(images)["scores"], input_signature=[spec])
  module.embed = tf.function(lambda images: forward(images)["embedding"],
                             input_signature=[spec])
  module.logits = tf.function(logits_fn, input_signature=[spec])

  @tf.function(input_signature=[spec])
  def serve(images):
    out = forward(images)
    return {"probabilities": out["scores"], "embedding": out["embedding"],
            "logits": logits_fn(images)}

  sidecar = {
      "format": SIDECAR_FORMAT, "version": 1,
      "label_names": list(task.manifest.label_names), "task": task.manifest.task,
      "image_size": int(task.image_size), "crop_fraction": float(crop_fraction),
      "input": "float32 [B,H,W,3] RGB in [0,1], centre crop then resize to image_size",
      "outputs": {"__call__": "probabilities [B,K]", "embed": "features [B,C]",
                  "logits": "[B,K]"},
      "variant": task.config.variant,
      "from_projection_layer": int(task.config.from_projection_layer),
      "source": source,
  }
  out_dir = out_dir.rstrip("/")
  if (tf.io.gfile.exists(out_dir) and tf.io.gfile.listdir(out_dir)
      and not is_classifier_savedmodel(out_dir)):
    raise CheckpointError(f"refusing to replace {out_dir}: it exists and is not a classifier "
                          "SavedModel")
  def write(tmp: str) -> None:
    tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
    io_utils.atomic_write_json(os.path.join(tmp, SIDECAR_FILE), sidecar)

  return io_utils.replace_dir_atomically(out_dir, write)


# ------------------------------------------------------------------------- label schema


def align_labels(manifest: Manifest, label_names: Sequence[str], task: str,
                 name: str = "") -> Manifest:
  """Reorders/selects ``manifest``'s label columns to the model's ``label_names``.

  Extra columns are dropped (e.g. MIMIC's 14 observations for a 5-condition model). A
  model label missing from the set, or a task mismatch, raises DataError.
  """
  where = f"evaluation set {name!r} ({manifest.source})" if name else manifest.source
  label_names = tuple(label_names)
  if manifest.task == "unlabelled":
    raise DataError(f"{where} has no labels; evaluation needs the model's labels "
                    f"{list(label_names)}")
  if (task == "multiclass") != (manifest.task == "multiclass"):
    raise DataError(f"{where} is a {manifest.task} set but the model is {task}")
  if manifest.label_names == label_names:
    return dataclasses.replace(manifest, task=task)
  missing = [n for n in label_names if n not in manifest.label_names]
  if missing:
    raise DataError(f"{where} lacks the model's label(s) {missing}; it has "
                    f"{list(manifest.label_names)}")
  if task == "multiclass" and len(manifest.label_names) != len(label_names):
    raise DataError(f"{where} has classes {list(manifest.label_names)}, the model "
                    f"{list(label_names)}")
  idx = [manifest.label_names.index(n) for n in label_names]
  records = tuple(dataclasses.replace(r, labels=tuple(r.labels[i] for i in idx),
                                      mask=tuple(r.mask[i] for i in idx))
                  for r in manifest.records)
  return dataclasses.replace(manifest, records=records, label_names=label_names, task=task)


# ----------------------------------------------------------------------- operating point


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
  """How the sensitivity/specificity threshold is chosen (see the module docstring).

  Attributes:
    rule: ``youden`` | ``sensitivity`` | ``specificity`` | ``fixed``.
    value: target sensitivity/specificity in (0, 1], or the fixed threshold.
  """
  rule: str = "youden"
  value: Optional[float] = None

  def describe(self) -> str:
    if self.rule == "youden":
      return "youden"
    return f"{self.rule}:{self.value:g}" if self.rule != "fixed" else f"{self.value:g}"


def parse_operating_point(spec: Any) -> OperatingPoint:
  """``"youden"``, ``"sensitivity:0.9"`` (``sens:``), ``"specificity:0.9"`` (``spec:``), or
  a number (fixed threshold) → :class:`OperatingPoint`."""
  if isinstance(spec, OperatingPoint):
    return spec
  if isinstance(spec, (int, float)) and not isinstance(spec, bool):
    return OperatingPoint("fixed", float(spec))
  text = str(spec).strip().lower()
  if text == "youden":
    return OperatingPoint("youden")
  rule, sep, value = text.partition(":")
  aliases = {"sens": "sensitivity", "sensitivity": "sensitivity", "spec": "specificity",
             "specificity": "specificity"}
  try:
    if sep and rule in aliases:
      target = float(value)
      if not 0.0 < target <= 1.0:
        raise ValueError
      return OperatingPoint(aliases[rule], target)
    if not sep:
      threshold = float(text)
      if math.isfinite(threshold):
        return OperatingPoint("fixed", threshold)
  except ValueError:
    pass
  raise ConfigError(f"operating point {spec!r}: use youden, sensitivity:T, specificity:T "
                    "(T in (0, 1]) or a fixed threshold such as 0.5")


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
  """Threshold maximising sensitivity + specificity − 1 (``score >= t`` is positive).

  Ties go to the highest threshold. NaN when a class is absent.
  """
  labels = np.asarray(labels, np.float64).ravel()
  if labels.size == 0 or labels.min() == labels.max():
    return float("nan")
  fpr, tpr, thresholds = metrics_lib.roc_curve(labels, scores)
  j = tpr - fpr
  best = int(np.argmax(j[1:])) + 1  # point 0 is the "nothing positive" corner (t = inf)
  return float(thresholds[best])


def choose_thresholds(op: OperatingPoint, labels: np.ndarray, scores: np.ndarray,
                      mask: np.ndarray, label_names: Sequence[str]
                      ) -> Tuple[Dict[str, float], List[str]]:
  """Per-class thresholds ``{name: t}`` by ``op`` on (validation) arrays ``[N, K]``.

  Returns ``(thresholds, notes)``; classes without both outcomes fall back to 0.5.
  """
  out: Dict[str, float] = {}
  notes: List[str] = []
  for j, name in enumerate(label_names):
    if op.rule == "fixed":
      out[name] = float(op.value)
      continue
    keep = mask[:, j] > 0
    y, s = labels[keep, j], scores[keep, j]
    if op.rule == "youden":
      t = youden_threshold(y, s)
    elif not ((y == 1).any() and (y == 0).any()):
      t = float("nan")
    elif op.rule == "sensitivity":
      t = metrics_lib.threshold_at_sensitivity(y, s, op.value)
    else:
      t = metrics_lib.threshold_at_specificity(y, s, op.value)
      if t == float("inf"):
        # Only "nothing positive" reaches the target: the next float above every score
        # keeps JSON finite and means the same.
        t = float(np.nextafter(np.max(s), np.inf))
    if not math.isfinite(t):
      notes.append(f"class {name!r}: no positives or no negatives in the validation set; "
                   "threshold 0.5")
      t = 0.5
    out[name] = float(t)
  return out, notes


# ---------------------------------------------------------------------------- evaluation


def check_set_names(names: Sequence[str]) -> None:
  """Set names become file names: letters, digits, ``_.-``; not ``summary``."""
  for name in names:
    if not _SET_NAME.match(name) or name in _RESERVED_NAMES or name.endswith("_predictions"):
      raise ConfigError(f"evaluation set name {name!r}: use letters, digits, '_', '.', '-' "
                        f"(not {', '.join(_RESERVED_NAMES)} or *_predictions)")


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


def main_metric(result: Mapping[str, Any], metric: Optional[str] = None
                ) -> Tuple[str, Dict[str, Any]]:
  """``(name, CI dict)`` of ``metric`` (default: mean AUC, or top-1 accuracy for
  multi-class) in an :func:`remedis_tf.eval.metrics.evaluate_predictions` result."""
  available = result.get("metrics", {})
  if metric is None:
    metric = "top1_accuracy" if result.get("task") == "multiclass" else "mean_auc"
  if metric not in available:
    raise ConfigError(f"metric {metric!r} is not computed for a {result.get('task')} task; "
                      f"available: {sorted(available)}")
  return metric, dict(available[metric])


def evaluate_model(model_source: str, eval_sets: Mapping[str, Manifest], out_dir: str,
                   num_bootstrap: int = 1000, operating_point: Any = "youden",
                   val_set: Optional[str] = None, batch_size: int = 64, seed: int = 0,
                   which: str = "best", metric: Optional[str] = None,
                   confidence: float = 0.95, save_predictions: bool = True,
                   log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Evaluates one classifier on several named sets and writes the results.

  Args:
    model_source: fine-tuning run directory or classifier SavedModel (see module doc).
    eval_sets: ``{name: Manifest}``; names become file names (``id_test``,
      ``ood_site_b``, ...). Label columns are matched to the model's by name.
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

  Returns:
    The summary dict also written to ``summary.json``: ``{"model", "model_kind",
    "checkpoint", "task", "label_names", "operating_point": {...}, "sets": {name: {"metric",
    "value", "lower", "upper", "num_examples", "num_patients", "role"}}}``.
  """
  if not eval_sets:
    raise ConfigError("no evaluation sets given")
  check_set_names(list(eval_sets))
  if val_set is not None and val_set not in eval_sets:
    raise ConfigError(f"val_set {val_set!r} is not one of the evaluation sets "
                      f"{sorted(eval_sets)}")
  op = parse_operating_point(operating_point)
  model = load_model(model_source, which)
  log(f"[evaluate] model {model_source} ({model.kind}; {model.task}, labels "
      f"{list(model.label_names)}, {model.image_size} px)")
  aligned = {name: align_labels(m, model.label_names, model.task, name)
             for name, m in eval_sets.items()}
  preds: Dict[str, predict_lib.Predictions] = {}
  for name, manifest in aligned.items():
    log(f"[evaluate] predicting {name}: {len(manifest)} images from {manifest.source}")
    preds[name] = model.predict(manifest, batch_size=batch_size)

  op_info: Dict[str, Any] = {"rule": op.describe()}
  thresholds: Optional[Dict[str, float]] = None
  if model.task != "multiclass":
    if op.rule == "fixed":
      thresholds, notes = choose_thresholds(op, None, None, None, model.label_names)
      op_info["chosen_on"] = None
    elif val_set is None:
      thresholds = {n: 0.5 for n in model.label_names}
      notes = [f"no validation set named: rule {op.describe()} not applied, fixed 0.5"]
      op_info["chosen_on"] = None
    else:
      p = preds[val_set]
      thresholds, notes = choose_thresholds(op, p.labels, p.scores, p.mask, model.label_names)
      op_info["chosen_on"] = val_set
    op_info["thresholds"] = thresholds
    op_info["notes"] = notes
    for note in notes:
      log(f"[evaluate] operating point: {note}")
  else:
    op_info["notes"] = ["multi-class task: no thresholded metrics"]

  results: Dict[str, Dict[str, Any]] = {}
  sets_summary: Dict[str, Dict[str, Any]] = {}
  for name, p in preds.items():
    kwargs = {"operating_point": thresholds} if thresholds is not None else {}
    result = metrics_lib.evaluate_predictions(
        model.task, p.labels, p.scores, p.mask, patients=p.patients,
        label_names=list(model.label_names), num_bootstrap=num_bootstrap,
        confidence=confidence, seed=seed, **kwargs)
    result["set"] = name
    result["source"] = aligned[name].source
    result["model"] = model_source
    result["operating_point"] = op_info
    results[name] = result
    metric_name, ci = main_metric(result, metric)
    role = "validation (operating point chosen here)" if name == op_info.get("chosen_on") else ""
    sets_summary[name] = {"metric": metric_name, "value": ci["value"], "lower": ci["lower"],
                          "upper": ci["upper"], "num_examples": result["num_examples"],
                          "num_patients": result["num_patients"], "role": role,
                          "source": aligned[name].source}
    log(f"[evaluate] {name}: {metric_name} {_fmt(ci)} ({result['num_examples']} images)")

  summary = {"model": model_source, "model_kind": model.kind,
             "checkpoint": model.info.get("restored_checkpoint", ""),
             "task": model.task, "label_names": list(model.label_names),
             "image_size": model.image_size, "num_bootstrap": int(num_bootstrap),
             "confidence": confidence, "operating_point": op_info, "sets": sets_summary}
  # Everything is computed: only now touch out_dir.
  for name, result in results.items():
    metrics_lib.write_metrics(result, os.path.join(out_dir, f"{name}.json"),
                              os.path.join(out_dir, f"{name}.csv"))
    if save_predictions:
      io_utils.atomic_write_text(os.path.join(out_dir, f"{name}_predictions.csv"),
                                 _predictions_csv(preds[name], model.label_names))
  io_utils.atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
  io_utils.atomic_write_text(os.path.join(out_dir, "summary.csv"), _summary_csv(sets_summary))
  log(f"[evaluate] wrote {out_dir}/summary.json")
  return summary


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


def read_summary(out_dir: str) -> Dict[str, Any]:
  """Reads ``out_dir/summary.json`` written by :func:`evaluate_model`."""
  path = os.path.join(out_dir, "summary.json")
  if not tf.io.gfile.exists(path):
    raise DataError(f"no evaluation summary at {path}")
  return json.loads(tf.io.gfile.GFile(path).read())
