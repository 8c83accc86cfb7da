"""Image folders → Manifest.

Two layouts:
* class folders (``root/<class>/**/<image>``): multiclass, one-hot over the sorted class
  folder names;
* any other tree (``root/**/<image>``): unlabelled.

Images are found by extension (png, jpg, jpeg, dcm; case-insensitive); hidden files and
folders (leading ".") are skipped. Order is sorted by relative path, ids are the
relative paths. A ``patient_regex`` (e.g. ``r"patient\\d+"``) applied to the relative path
gives the patient id (group 1 if the pattern has a group, else the whole match).
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.errors import ConfigError, DataError

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "dcm")


def _list_images(root: str, extensions: Sequence[str]) -> List[str]:
  """Relative posix paths of the image files under ``root`` (sorted)."""
  exts = tuple("." + e.lower().lstrip(".") for e in extensions)
  root = root.rstrip("/")
  found = []
  for dirpath, subdirs, files in tf.io.gfile.walk(root):
    subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    rel_dir = dirpath[len(root):].strip("/")
    if any(part.startswith(".") for part in rel_dir.split("/") if part):
      continue
    for name in files:
      if not name.startswith(".") and name.lower().endswith(exts):
        found.append(f"{rel_dir}/{name}" if rel_dir else name)
  return sorted(found)


def _patient_fn(patient_regex: Optional[str]):
  if not patient_regex:
    return lambda rel: ""
  try:
    pattern = re.compile(patient_regex)
  except re.error as e:
    raise ConfigError(f"invalid patient_regex {patient_regex!r}: {e}") from e

  def fn(rel: str) -> str:
    m = pattern.search(rel)
    if not m:
      return ""
    return m.group(1) if pattern.groups else m.group(0)
  return fn


def _check_root(root: str) -> None:
  if not tf.io.gfile.isdir(root):
    raise DataError(f"{root}: image folder not found (or not a folder)")


def class_folder_manifest(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                          patient_regex: Optional[str] = None,
                          class_names: Optional[Sequence[str]] = None) -> Manifest:
  """``root/<class>/**/image`` → multiclass Manifest (one-hot over sorted class names).

  Args:
    root: folder with one sub-folder per class (local or gs://).
    extensions: image file extensions to take.
    patient_regex: optional regex giving the patient id from the relative path.
    class_names: optional explicit class order; folders not listed raise DataError.

  Raises:
    DataError: missing root, images directly under root, a class folder without images,
      fewer than 2 classes, an unlisted class folder.
  """
  _check_root(root)
  root = root.rstrip("/")
  rels = _list_images(root, extensions)
  loose = [r for r in rels if "/" not in r]
  if loose:
    raise DataError(f"{root}/{loose[0]}: image directly under the class-folder root "
                    "(expected root/<class>/<image>)")
  folders = sorted(d.rstrip("/") for d in tf.io.gfile.listdir(root)
                   if not d.startswith(".") and tf.io.gfile.isdir(f"{root}/{d.rstrip('/')}"))
  by_class = {c: [] for c in folders}
  for rel in rels:
    by_class[rel.split("/", 1)[0]].append(rel)
  for c, items in by_class.items():
    if not items:
      raise DataError(f"{root}/{c}: class folder contains no images "
                      f"(extensions {', '.join(extensions)})")
  names: Tuple[str, ...] = tuple(class_names) if class_names else tuple(folders)
  for c in folders:
    if c not in names:
      raise DataError(f"{root}/{c}: class folder not in class_names {list(names)}")
  if len(names) < 2:
    raise DataError(f"{root}: need at least 2 class folders for a multiclass task, "
                    f"found {list(folders)}")
  index = {c: i for i, c in enumerate(names)}
  patient = _patient_fn(patient_regex)
  records = []
  for rel in rels:
    one_hot = [0.0] * len(names)
    one_hot[index[rel.split("/", 1)[0]]] = 1.0
    records.append(Record(image_path=f"{root}/{rel}", example_id=rel, labels=tuple(one_hot),
                          mask=(1.0,) * len(names), patient_id=patient(rel)))
  return Manifest(records=tuple(records), label_names=names, task="multiclass", source=root)


def unlabelled_folder_manifest(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                               patient_regex: Optional[str] = None) -> Manifest:
  """Every image anywhere under ``root`` → unlabelled Manifest (sorted relative paths)."""
  _check_root(root)
  root = root.rstrip("/")
  rels = _list_images(root, extensions)
  if not rels:
    raise DataError(f"{root}: no images found (extensions {', '.join(extensions)})")
  patient = _patient_fn(patient_regex)
  records = tuple(Record(image_path=f"{root}/{rel}", example_id=rel, patient_id=patient(rel))
                  for rel in rels)
  return Manifest(records=records, task="unlabelled", source=root)


def folder_manifest(root: str, labelled: bool,
                    extensions: Sequence[str] = IMAGE_EXTENSIONS,
                    patient_regex: Optional[str] = None) -> Manifest:
  """Class folders when ``labelled`` else an unlabelled tree (see the two functions)."""
  if labelled:
    return class_folder_manifest(root, extensions, patient_regex)
  return unlabelled_folder_manifest(root, extensions, patient_regex)
