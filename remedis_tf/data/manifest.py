"""Record and manifest types: the one in-memory form every reader produces.

A :class:`Manifest` is an ordered, immutable list of :class:`Record` s plus the label
schema. Readers (CSV recipes, image folders, TFRecord indexes, TFDS) build manifests;
pipelines, label-fraction selection and MICLe pairing consume them.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from remedis_tf.data.dicom import DicomOptions
# The task names are remedis_tf.tasks'; re-exported here, where readers have always
# imported them.
from remedis_tf.tasks import LABELLED_TASKS, TASK_TYPES  # pylint: disable=unused-import

STORAGE_KINDS = ("files", "tfrecords")


def task_for_label_count(num_labels: int) -> str:
  """Task of ``num_labels`` 0/1 label columns: unlabelled (0), binary (1), else multilabel."""
  return "unlabelled" if num_labels == 0 else ("binary" if num_labels == 1 else "multilabel")


@dataclasses.dataclass(frozen=True)
class Record:
  """One image.

  Attributes:
    image_path: full path (local or ``gs://``) of the encoded image (PNG/JPEG/DICOM).
    example_id: unique id within the manifest (defaults to the relative path).
    labels: K floats. Multi-label/binary: 0/1. Multi-class: one-hot. Empty if unlabelled.
    mask: K floats, 1 where the label is known and used, 0 where it is masked out.
    patient_id: patient/case key ("" if unknown); MICLe pairs and label-fraction sampling
      group by it, bootstrap CIs resample it.
    view: acquisition view (e.g. "frontal"), "" if unknown.
    site: acquisition site / domain, "" if unknown.
    source_row: 1-based row in the source file (CSV line number) for error messages, 0 if n/a.
    attributes: extra metadata kept from named source columns (e.g. ``(("Sex", "Female"),
      ("Age", "63"))``), as ``(column, raw cell text)`` pairs in the order asked for;
      subgroup reports read them (see :meth:`attribute`). Empty unless a reader was asked
      to keep columns.
  """
  image_path: str
  example_id: str
  labels: Tuple[float, ...] = ()
  mask: Tuple[float, ...] = ()
  patient_id: str = ""
  view: str = ""
  site: str = ""
  source_row: int = 0
  attributes: Tuple[Tuple[str, str], ...] = ()

  def attribute(self, name: str) -> Optional[str]:
    """The kept column ``name``'s cell text, or None when this record has no such column."""
    for key, value in self.attributes:
      if key == name:
        return value
    return None


@dataclasses.dataclass(frozen=True)
class Storage:
  """Where a manifest's image bytes live, which decides how every consumer reads them.

  Attributes:
    kind: one of STORAGE_KINDS. ``"files"``: each record's ``image_path`` is an encoded
      image file (PNG/JPEG/DICOM). ``"tfrecords"``: ``image_path`` is the shard holding the
      record's ``tf.train.Example`` (``remedis_tf.data.tfrecords``), located through the
      shard set's index ``tfrecords.index_path(tfrecord_prefix)``.
    tfrecord_prefix: the shard set's prefix P (shards ``P-0000k-of-0000n.tfrecord``, index
      ``P.index.csv``, sidecar ``P.manifest.json``); set exactly when kind is "tfrecords".
  """
  kind: str = "files"
  tfrecord_prefix: str = ""

  def __post_init__(self):
    if self.kind not in STORAGE_KINDS:
      raise ValueError(f"storage kind must be one of {STORAGE_KINDS}, got {self.kind!r}")
    if (self.kind == "tfrecords") != bool(self.tfrecord_prefix):
      raise ValueError("Storage.tfrecord_prefix must be set exactly when kind is "
                       f"'tfrecords' (kind {self.kind!r}, prefix {self.tfrecord_prefix!r})")

  @classmethod
  def tfrecords(cls, prefix: str) -> "Storage":
    """Storage of the records of the shard set with prefix ``prefix``."""
    return cls(kind="tfrecords", tfrecord_prefix=prefix)

  @property
  def is_tfrecords(self) -> bool:
    return self.kind == "tfrecords"


@dataclasses.dataclass(frozen=True)
class Manifest:
  """An ordered collection of records with a shared label schema.

  Attributes:
    records: the records, in a stable order.
    label_names: names of the K label columns/classes.
    task: one of TASK_TYPES.
    source: human-readable origin (e.g. the CSV path), used in error messages and logs
      only; no code reads meaning from it (``storage`` says how to read the images).
    dicom: how the source's DICOM files are mapped to [0, 1] (pipelines, validation and
      TFRecord writing decode with it); other formats ignore it.
    storage: where the image bytes live (files, or TFRecord shards); subsets and other
      manifests derived with ``dataclasses.replace`` keep it.
  """
  records: Tuple[Record, ...]
  label_names: Tuple[str, ...] = ()
  task: str = "unlabelled"
  source: str = ""
  dicom: DicomOptions = DicomOptions()
  storage: Storage = Storage()

  def __post_init__(self):
    if self.task not in TASK_TYPES:
      raise ValueError(f"task must be one of {TASK_TYPES}, got {self.task!r}")

  def __len__(self) -> int:
    return len(self.records)

  @property
  def num_labels(self) -> int:
    return len(self.label_names)

  def label_matrix(self) -> np.ndarray:
    """float32 ``[N, K]`` labels (``[N, 0]`` when unlabelled)."""
    return np.asarray([r.labels for r in self.records], np.float32).reshape(
        len(self.records), self.num_labels)

  def mask_matrix(self) -> np.ndarray:
    """float32 ``[N, K]`` label mask."""
    return np.asarray([r.mask for r in self.records], np.float32).reshape(
        len(self.records), self.num_labels)

  def paths(self) -> List[str]:
    return [r.image_path for r in self.records]

  def patients(self) -> List[str]:
    """Patient key of each record; records without one count as their own patient."""
    return [r.patient_id or f"__record__{r.example_id}" for r in self.records]

  def subset(self, indices: Sequence[int], source_suffix: str = "") -> "Manifest":
    """Manifest of ``records[i] for i in indices`` with the same schema and storage."""
    return dataclasses.replace(self, records=tuple(self.records[i] for i in indices),
                               source=self.source + source_suffix)

  def by_patient(self) -> Dict[str, List[int]]:
    """patient key → record indices, in first-seen order."""
    groups: Dict[str, List[int]] = {}
    for i, p in enumerate(self.patients()):
      groups.setdefault(p, []).append(i)
    return groups


def describe(manifest: Manifest) -> str:
  """One line: size, task, labels and patient count, for logs and CLI summaries."""
  n_pat = len({r.patient_id for r in manifest.records if r.patient_id})
  labels = ", ".join(manifest.label_names) if manifest.label_names else "none"
  return (f"{len(manifest)} images, {n_pat} patients, task {manifest.task}, "
          f"labels [{labels}] from {manifest.source or '?'}")
