"""Two classifiers on the same evaluation sets: paired differences, intervals, verdicts.

:func:`compare_models` predicts a model and a reference model on every named set and
writes ``findings.json`` in the form the demo writes (:mod:`remedis_tf.eval.findings`):
one finding per set, ``model − reference`` of the task's main metric, with a 95 % patient
bootstrap interval whose resamples are shared by both models (paired), and a verdict
(``better`` / ``worse`` / ``no difference``). A set named in ``id_sets`` gives an
``id_<set>`` finding (in-distribution: the model's own site), every other set an
``ood_<set>`` finding. Labels are matched to each model's by name; both models must have
the same task and label names. A label without a positive or a negative example in a set
has no AUC there; it is left out of that set's mean AUC and named in the finding
(``labels_left_out``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np

from remedis_tf import io_utils
from remedis_tf.data.label_alignment import align_labels
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError
from remedis_tf.eval import findings as findings_lib
from remedis_tf.eval import resampling
from remedis_tf.runs import classifier as classifier_lib

FINDINGS_FILE = "findings.json"


def _scorable_labels(task: str, label_names, labels, mask):
  """Column indices whose AUC is defined on the full set (a positive and a negative among
  the labelled examples), and the names of the others; every column for multi-class (top-1
  accuracy needs them all)."""
  if task == "multiclass":
    return np.arange(labels.shape[1]), []
  keep, left_out = [], []
  for k, label in enumerate(label_names):
    known = labels[mask[:, k] > 0, k]
    if (known == 1).any() and (known == 0).any():
      keep.append(k)
    else:
      left_out.append(label)
  if not keep:
    raise ConfigError(f"no label has both a positive and a negative example in this set: "
                      f"{list(label_names)} cannot be compared")
  return np.asarray(keep), left_out


def finding_name(set_name: str, in_distribution: bool) -> str:
  """``id_<set>`` or ``ood_<set>``; a set already named with that prefix keeps its name."""
  kind = "id_" if in_distribution else "ood_"
  return set_name if set_name.startswith(kind) else kind + set_name


def compare_models(model_source: str, reference_source: str,
                   eval_sets: Mapping[str, Manifest], out_dir: str,
                   id_sets: Sequence[str] = (), num_bootstrap: int = 1000, seed: int = 0,
                   batch_size: int = 64, which: str = "best",
                   log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Writes ``out_dir/findings.json`` comparing ``model_source`` with ``reference_source``
  (each a run directory, classifier preset or classifier SavedModel) on ``eval_sets``;
  returns the document.

  Args:
    id_sets: names of ``eval_sets`` that are in-distribution (``id_`` findings); the
      others are ``ood_``.
    num_bootstrap: shared patient resamples (>= 1); seed: their RNG seed.
    The metric is the task's own (:func:`resampling.metric_for`: mean AUC, or top-1
    accuracy for multi-class tasks).
  """
  unknown = sorted(set(id_sets) - set(eval_sets))
  if unknown:
    raise ConfigError(f"--id_set names {unknown} are not evaluation sets {sorted(eval_sets)}")
  if num_bootstrap < 1:
    raise ConfigError(f"a comparison needs bootstrap resamples, got num_bootstrap={num_bootstrap}")
  model = classifier_lib.load_model(model_source, which)
  reference = classifier_lib.load_model(reference_source, which)
  if (model.task, tuple(model.label_names)) != (reference.task, tuple(reference.label_names)):
    raise ConfigError(
        f"the models differ in task or labels: {model_source} is {model.task} "
        f"{list(model.label_names)}, the reference {reference_source} is {reference.task} "
        f"{list(reference.label_names)}")
  metric_name = resampling.metric_for(model.task)[0]
  found = []
  for name, manifest in eval_sets.items():
    aligned = align_labels(manifest, model.label_names, model.task, name)
    log(f"[compare] {name}: predicting {len(aligned)} images with both models")
    preds = {key: m.predict(aligned, batch_size=batch_size)
             for key, m in (("reference", reference), ("model", model))}
    p = preds["model"]
    keep, left_out = _scorable_labels(model.task, model.label_names, p.labels, p.mask)
    if left_out:
      log(f"[compare] {name}: {left_out} left out of {metric_name} (no positive or no "
          "negative example in this set)")
    reps = resampling.replicates({(key, 1.0, 0): q.scores[:, keep] for key, q in preds.items()},
                                 p.labels[:, keep], p.mask[:, keep], p.patients, model.task,
                                 num_bootstrap, seed)
    item = findings_lib.compare(finding_name(name, name in id_sets), metric_name, reps,
                                ("reference", 1.0), ("model", 1.0), set=name,
                                source=aligned.source, labels_left_out=left_out)
    found.append(item)
    lo, hi = item["interval"]
    log(f"[compare] {item['name']}: {metric_name} {item['values'][1]:.4f} vs reference "
        f"{item['values'][0]:.4f}, difference {item['estimate']:+.4f} "
        + (f"[{lo:+.4f}, {hi:+.4f}]" if lo is not None else "[undefined]")
        + f": {item['verdict']}")
  protocol = {"selection": f"none here: each model's own checkpoint ({which})",
              "model": model_source, "reference": reference_source,
              "metric": metric_name, "id_sets": list(id_sets),
              "interval": (f"95% percentile bootstrap, {num_bootstrap} replicates drawing "
                           "test patients with replacement, shared by both models (paired)")}
  doc = findings_lib.document(protocol, found)
  path = os.path.join(out_dir, FINDINGS_FILE)
  io_utils.atomic_write_json(path, doc)
  log(f"[compare] wrote {path}")
  return doc
