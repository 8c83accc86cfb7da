"""Matching a labelled set's columns to a model's outputs, by label name."""

from __future__ import annotations

import dataclasses
from typing import List, Sequence

from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import DataError


def align_labels(manifest: Manifest, label_names: Sequence[str], task: str,
                 name: str = "", allow_missing: bool = False) -> Manifest:
  """Reorders/selects ``manifest``'s label columns to the model's ``label_names``.

  Extra columns are dropped (e.g. MIMIC's 14 observations for a 5-condition model). A
  model label missing from the set raises DataError, unless ``allow_missing`` (multi-label
  and binary models only): the set then keeps the labels it shares with the model, in the
  model's order (:func:`missing_labels` lists the others), and DataError only when it
  shares none. A task mismatch raises DataError.
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
  missing = missing_labels(manifest, label_names)
  if missing and (not allow_missing or task == "multiclass"):
    raise DataError(f"{where} lacks the model's label(s) {missing}; it has "
                    f"{list(manifest.label_names)}")
  if task == "multiclass" and len(manifest.label_names) != len(label_names):
    raise DataError(f"{where} has classes {list(manifest.label_names)}, the model "
                    f"{list(label_names)}")
  shared = tuple(n for n in label_names if n in manifest.label_names)
  if not shared:
    raise DataError(f"{where} has none of the model's labels {list(label_names)}; it has "
                    f"{list(manifest.label_names)}")
  idx = [manifest.label_names.index(n) for n in shared]
  records = tuple(dataclasses.replace(r, labels=tuple(r.labels[i] for i in idx),
                                      mask=tuple(r.mask[i] for i in idx))
                  for r in manifest.records)
  return dataclasses.replace(manifest, records=records, label_names=shared, task=task)


def missing_labels(manifest: Manifest, label_names: Sequence[str]) -> List[str]:
  """The names of ``label_names`` that ``manifest`` has no column for, in that order."""
  return [n for n in label_names if n not in manifest.label_names]
