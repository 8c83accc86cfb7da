"""Dataset recipes: known CSV layouts (CheXpert, MIMIC-CXR-JPG, generic) → Manifest.

All recipes return the same :class:`Manifest` form as the CSV reader; labels follow
``csv_reader``'s value and policy rules (1 / 0 / -1 uncertain / blank).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from remedis_tf.data import csv_reader
from remedis_tf.data.manifest import Manifest, Record, task_for_label_count
from remedis_tf.errors import ConfigError, DataError

# The five conditions of the CheXpert competition (and of the REMEDIS CXR task).
CHEXPERT_COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                        "Pleural Effusion")
# All 14 CheXpert / MIMIC-CXR observation columns, in the files' order.
CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
    "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices")

_PATIENT_RE = re.compile(r"(patient\d+)")
_CHEXPERT_DIR_RE = re.compile(r"^CheXpert-v\d+\.\d+(-small)?$")
MIMIC_SPLITS = {"train": "train", "validate": "validate", "valid": "validate",
                "val": "validate", "validation": "validate", "test": "test", "all": None}


def patient_from_path(path: str) -> str:
  """``.../patient00012/...`` → ``"patient00012"``; "" when the path has none."""
  m = _PATIENT_RE.search(path)
  return m.group(1) if m else ""


def normalise_view(value: str) -> str:
  """CheXpert "Frontal"/"Lateral" and DICOM ViewPosition (PA, AP, LATERAL, LL) → a view.

  Returns "frontal", "lateral", the lower-cased value for anything else, "" if blank.
  """
  v = value.strip().upper()
  if not v:
    return ""
  if v == "FRONTAL" or v.startswith("PA") or v.startswith("AP"):
    return "frontal"
  if v in ("LATERAL", "LL", "RL", "LAT", "XTABLE LATERAL"):
    return "lateral"
  return value.strip().lower()


def chexpert_path_fn(data_root: str):
  """Path resolver for CheXpert CSV cells such as ``CheXpert-v1.0/train/patient1/...``.

  Cells are joined to ``data_root``; when ``data_root`` itself is the
  ``CheXpert-v1.0[-small]`` folder that the cell starts with, that component is dropped,
  so both the dataset folder and its parent work as ``data_root``.
  """
  root = data_root.rstrip("/")
  base = root.rsplit("/", 1)[-1]

  def resolve(cell: str) -> str:
    if csv_reader.is_absolute(cell):
      return cell
    first, sep, rest = cell.partition("/")
    if sep and first == base and _CHEXPERT_DIR_RE.match(first):
      cell = rest
    return csv_reader.join_root(root, cell)

  return resolve


def chexpert(csv_path: str,
             data_root: Optional[str] = None,
             label_columns: Sequence[str] = CHEXPERT_COMPETITION,
             uncertain_policy: str = "ignore",
             blank_policy: str = "zeros",
             frontal_only: bool = False,
             attribute_columns: Sequence[str] = ()) -> Manifest:
  """CheXpert ``train.csv``/``valid.csv`` (or a CheXpert-style CSV) → Manifest.

  Columns used: ``Path``; the label columns; ``Frontal/Lateral`` (view, if present);
  ``Patient`` (else the ``patientNNNNN`` part of the path); ``Site`` (if present).
  The task is multilabel (K > 1), binary (K = 1) or unlabelled (no label columns).

  Args:
    csv_path: the CSV file.
    data_root: folder paths are relative to (see :func:`chexpert_path_fn`); None → the
      CSV's folder (CheXpert keeps train.csv inside ``CheXpert-v1.0/``, which works).
    label_columns: observation columns to use as labels (default: the 5 competition ones).
    uncertain_policy: "ignore" (mask out -1), "ones" (U-Ones) or "zeros" (U-Zeros).
    blank_policy: "zeros" (CheXpert: not mentioned = negative) or "ignore".
    frontal_only: keep only rows whose ``Frontal/Lateral`` is "Frontal".
    attribute_columns: extra columns kept in ``Record.attributes`` (e.g. ``Sex``, ``Age``,
      ``AP/PA`` for subgroup reports).
  """
  csv_reader.check_policies(uncertain_policy, blank_policy)
  table = csv_reader.read_csv_table(csv_path)
  header = set(table.header)
  view_col = "Frontal/Lateral" if "Frontal/Lateral" in header else None
  if frontal_only:
    table.require_columns(["Frontal/Lateral"])
  if data_root is None:
    data_root = csv_path.rsplit("/", 1)[0] if "/" in csv_path else "."
  label_columns = tuple(label_columns or ())
  return csv_reader.manifest_from_table(
      table, data_root=data_root, path_column="Path", label_columns=label_columns,
      task=task_for_label_count(len(label_columns)),
      patient_column="Patient" if "Patient" in header else None,
      view_column=view_col, site_column="Site" if "Site" in header else None,
      uncertain_policy=uncertain_policy, blank_policy=blank_policy,
      path_fn=chexpert_path_fn(data_root),
      patient_fn=lambda cell, row: patient_from_path(cell),
      view_fn=normalise_view, attribute_columns=attribute_columns,
      row_filter=(lambda row: normalise_view(row["Frontal/Lateral"]) == "frontal")
      if frontal_only else None)


def _find_mimic_csv(data_root: str, suffix: str, required: bool) -> Optional[str]:
  names = [f"{data_root.rstrip('/')}/mimic-cxr-2.0.0-{suffix}.csv{ext}" for ext in ("", ".gz")]
  for name in names:
    if tf.io.gfile.exists(name):
      return name
  if required:
    raise DataError(f"{data_root}: MIMIC-CXR-JPG file not found (looked for "
                    f"{' and '.join(names)})")
  return None


def mimic_cxr(data_root: str,
              split: str = "train",
              label_columns: Sequence[str] = CHEXPERT_COMPETITION,
              uncertain_policy: str = "ignore",
              blank_policy: str = "zeros",
              frontal_only: bool = False,
              attribute_columns: Sequence[str] = ()) -> Manifest:
  """MIMIC-CXR-JPG (v2.0.0 layout) → Manifest, one record per DICOM-derived JPEG.

  Joins ``mimic-cxr-2.0.0-split.csv`` (dicom_id, study_id, subject_id, split) with
  ``-chexpert.csv`` (subject_id, study_id, labels) on (subject_id, study_id) and with
  ``-metadata.csv`` (dicom_id, ViewPosition; optional unless ``frontal_only``) on
  dicom_id; ``.csv.gz`` versions are accepted. Image path:
  ``{data_root}/files/p{first 2 digits}/p{subject_id}/s{study_id}/{dicom_id}.jpg``;
  patient = subject_id, id = dicom_id, view from ViewPosition (PA/AP → "frontal").
  With label columns, images whose study has no CheXpert-labeler row are dropped; with
  ``label_columns=()`` every image of the split is kept (task "unlabelled").

  Args:
    data_root: the folder holding the CSVs and ``files/``.
    split: "train", "validate" (aliases "valid", "val"), "test" or "all".
    label_columns, uncertain_policy, blank_policy, frontal_only: as in :func:`chexpert`.
    attribute_columns: columns kept in ``Record.attributes``, looked up first in the
      ``-metadata.csv`` row of the image (e.g. ``ViewPosition``: AP/PA/LATERAL), then in
      its ``-split.csv`` row (the metadata file is then required).
  """
  csv_reader.check_policies(uncertain_policy, blank_policy)
  if split not in MIMIC_SPLITS:
    raise ConfigError(f"MIMIC-CXR split must be one of {sorted(MIMIC_SPLITS)}, got {split!r}")
  wanted_split = MIMIC_SPLITS[split]
  label_columns = tuple(label_columns or ())
  root = data_root.rstrip("/")

  split_table = csv_reader.read_csv_table(_find_mimic_csv(root, "split", True))
  split_table.require_columns(["dicom_id", "study_id", "subject_id", "split"])

  labels_by_study: Dict[Tuple[str, str], Tuple[Tuple[float, ...], Tuple[float, ...]]] = {}
  if label_columns:
    lab_table = csv_reader.read_csv_table(_find_mimic_csv(root, "chexpert", True))
    lab_table.require_columns(["subject_id", "study_id", *label_columns])
    first_line: Dict[Tuple[str, str], int] = {}
    for line, row in lab_table.rows:
      key = (row["subject_id"].strip(), row["study_id"].strip())
      if key in first_line:
        raise DataError(f"{lab_table.path}:{line}: column 'study_id': duplicated study "
                        f"{key[1]} of subject {key[0]} (first on line {first_line[key]})")
      first_line[key] = line
      pairs = [csv_reader.parse_label_value(
          row[c], uncertain_policy=uncertain_policy, blank_policy=blank_policy,
          where=f"{lab_table.path}:{line}: column {c!r}") for c in label_columns]
      labels_by_study[key] = (tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))

  attribute_columns = csv_reader.unique_columns(attribute_columns)
  views: Dict[str, str] = {}
  meta_rows: Dict[str, Dict[str, str]] = {}
  meta_path = _find_mimic_csv(root, "metadata", frontal_only or bool(attribute_columns))
  if meta_path:
    meta = csv_reader.read_csv_table(meta_path)
    meta.require_columns(["dicom_id", "ViewPosition"])
    views = {row["dicom_id"].strip(): normalise_view(row["ViewPosition"])
             for _, row in meta.rows}
    if attribute_columns:
      meta_rows = {row["dicom_id"].strip(): row for _, row in meta.rows}
      for col in attribute_columns:
        if col not in meta.header and col not in split_table.header:
          raise DataError(f"{meta.path}:1: missing column {col!r} (not in "
                          f"{split_table.path} either)")

  records: List[Record] = []
  seen: Dict[str, int] = {}
  for line, row in split_table.rows:
    if wanted_split is not None and row["split"].strip() != wanted_split:
      continue
    where = f"{split_table.path}:{line}"
    dicom_id, study, subject = (row[c].strip() for c in ("dicom_id", "study_id", "subject_id"))
    for col, value in (("dicom_id", dicom_id), ("study_id", study), ("subject_id", subject)):
      if not value:
        raise DataError(f"{where}: column {col!r}: empty value")
    if not subject.isdigit() or len(subject) < 2:
      raise DataError(f"{where}: column 'subject_id': expected digits, got {subject!r}")
    if dicom_id in seen:
      raise DataError(f"{where}: column 'dicom_id': duplicated id {dicom_id!r} "
                      f"(first on line {seen[dicom_id]})")
    seen[dicom_id] = line
    view = views.get(dicom_id, "")
    if frontal_only and view != "frontal":
      continue
    labels: Tuple[float, ...] = ()
    mask: Tuple[float, ...] = ()
    if label_columns:
      found = labels_by_study.get((subject, study))
      if found is None:
        continue  # study without CheXpert-labeler output
      labels, mask = found
    path = f"{root}/files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
    attributes: Tuple[Tuple[str, str], ...] = ()
    if attribute_columns:
      meta_row = meta_rows.get(dicom_id, {})
      attributes = tuple((c, meta_row.get(c, row.get(c, "")).strip())
                         for c in attribute_columns)
    records.append(Record(image_path=path, example_id=dicom_id, labels=labels, mask=mask,
                          patient_id=subject, view=view, site="", source_row=line,
                          attributes=attributes))
  if not records:
    raise DataError(f"{split_table.path}: no images for split {split!r}"
                    f"{' with labels' if label_columns else ''}"
                    f"{' and a frontal view' if frontal_only else ''}")
  return Manifest(records=tuple(records), label_names=label_columns,
                  task=task_for_label_count(len(label_columns)), source=split_table.path)


def generic_csv(csv_path: str,
                data_root: Optional[str] = None,
                *,
                path_column: str = "Path",
                label_columns: Sequence[str] = (),
                task: Optional[str] = None,
                patient_column: Optional[str] = None,
                view_column: Optional[str] = None,
                site_column: Optional[str] = None,
                id_column: Optional[str] = None,
                class_column: Optional[str] = None,
                class_names: Optional[Sequence[str]] = None,
                uncertain_policy: str = "ignore",
                blank_policy: str = "zeros",
                attribute_columns: Sequence[str] = ()) -> Manifest:
  """Any CSV described by arguments → Manifest (see ``csv_reader.read_csv_manifest``).

  ``task`` None infers it: ``class_column`` → multiclass; no label columns →
  unlabelled; one → binary; more → multilabel.
  """
  label_columns = tuple(label_columns or ())
  if task is None:
    task = "multiclass" if class_column else task_for_label_count(len(label_columns))
  return csv_reader.read_csv_manifest(
      csv_path, data_root=data_root, path_column=path_column, label_columns=label_columns,
      task=task, patient_column=patient_column, view_column=view_column,
      site_column=site_column, id_column=id_column, uncertain_policy=uncertain_policy,
      blank_policy=blank_policy, class_column=class_column, class_names=class_names,
      attribute_columns=attribute_columns)
