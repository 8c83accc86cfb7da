"""CSV manifests: one row per image, label columns → :class:`Manifest`.

Reads through ``tf.io.gfile`` (so ``gs://`` works), accepts ``.csv.gz``, and uses the
stdlib ``csv`` module (quoted fields with commas or newlines are fine). Every user-caused
problem raises :class:`DataError` with a one-line message naming the file, the 1-based
CSV line number (the header is line 1) and the column.

Label cell values (multi-label / binary columns):
  ``1``/``1.0`` positive, ``0``/``0.0`` negative, ``-1``/``-1.0`` uncertain, blank.
  Uncertain → ``uncertain_policy``: "ignore" (label 0, mask 0), "ones" (1, mask 1),
  "zeros" (0, mask 1). Blank → ``blank_policy``: "zeros" (0, mask 1; CheXpert's
  convention: not mentioned = negative) or "ignore" (0, mask 0).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import posixpath
import re
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from remedis_tf.data.manifest import Manifest, Record, TASK_TYPES
from remedis_tf.errors import ConfigError, DataError

UNCERTAIN_POLICIES = ("ignore", "ones", "zeros")
BLANK_POLICIES = ("zeros", "ignore")

# Wide enough for any real manifest cell; the csv default (128 KiB) would reject
# pathological but harmless cells with a confusing message.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclasses.dataclass(frozen=True)
class CsvTable:
  """A parsed CSV file.

  Attributes:
    path: the file it came from (for messages).
    header: column names, in file order (surrounding whitespace stripped).
    rows: ``(line_number, {column: value})`` for every non-blank data row; line numbers
      are 1-based physical lines (header = 1) of the row's last line.
  """
  path: str
  header: Tuple[str, ...]
  rows: Tuple[Tuple[int, Dict[str, str]], ...]

  def require_columns(self, columns: Sequence[str]) -> None:
    """Raises DataError naming the first of ``columns`` absent from the header."""
    for col in columns:
      if col not in self.header:
        found = ", ".join(repr(c) for c in self.header)
        raise DataError(f"{self.path}:1: missing column {col!r} (columns found: {found})")


def _one_line(text: str, limit: int = 80) -> str:
  """repr() of a cell value, shortened, so it never breaks a one-line message."""
  r = repr(text)
  return r if len(r) <= limit else r[:limit - 4] + "...'"


def read_csv_table(csv_path: str) -> CsvTable:
  """Reads a CSV (optionally gzip-compressed) into a :class:`CsvTable`.

  Raises DataError for a missing/unreadable/empty file, bad encoding, malformed CSV,
  duplicated or empty header names, rows whose field count differs from the header's,
  and a file without data rows.
  """
  if not tf.io.gfile.exists(csv_path):
    raise DataError(f"{csv_path}: CSV file not found")
  try:
    with tf.io.gfile.GFile(csv_path, "rb") as f:
      raw = f.read()
  except tf.errors.OpError as e:
    raise DataError(f"{csv_path}: cannot read CSV file ({e.message.splitlines()[0]})") from e
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
      raise DataError(f"{csv_path}: corrupt gzip data ({e})") from e
  if not raw.strip():
    raise DataError(f"{csv_path}: empty CSV file (no header, no rows)")
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError(f"{csv_path}: not UTF-8 text (byte {e.start}); is this a CSV file?") from e

  reader = csv.reader(io.StringIO(text, newline=""), strict=True)
  header: Optional[Tuple[str, ...]] = None
  rows: List[Tuple[int, Dict[str, str]]] = []
  try:
    for fields in reader:
      line = reader.line_num
      if not fields or all(not x.strip() for x in fields):
        continue  # blank line
      if header is None:
        header = tuple(x.strip() for x in fields)
        seen = set()
        for i, name in enumerate(header):
          if not name:
            raise DataError(f"{csv_path}:{line}: header column {i + 1} has an empty name")
          if name in seen:
            raise DataError(f"{csv_path}:{line}: duplicated column {_one_line(name)} in header")
          seen.add(name)
        continue
      if len(fields) != len(header):
        raise DataError(f"{csv_path}:{line}: row has {len(fields)} fields but the header has "
                        f"{len(header)}")
      rows.append((line, dict(zip(header, fields))))
  except csv.Error as e:
    raise DataError(f"{csv_path}:{reader.line_num}: malformed CSV ({e})") from e
  if header is None:
    raise DataError(f"{csv_path}: empty CSV file (no header, no rows)")
  if not rows:
    raise DataError(f"{csv_path}: CSV has a header but no data rows")
  return CsvTable(csv_path, header, tuple(rows))


def parse_label_value(value: str, *, uncertain_policy: str, blank_policy: str,
                      where: str) -> Tuple[float, float]:
  """One label cell → ``(label, mask)`` following the module's policies.

  ``where`` ("file:line: column 'X'") prefixes the DataError message for an unknown
  value or a NaN.
  """
  v = value.strip()
  if not v:
    return (0.0, 1.0) if blank_policy == "zeros" else (0.0, 0.0)
  try:
    x = float(v)
  except ValueError:
    x = None
  if x is not None and math.isnan(x):
    raise DataError(f"{where}: NaN label {_one_line(v)} (use blank or -1 for unknown)")
  if x == 1.0:
    return 1.0, 1.0
  if x == 0.0:
    return 0.0, 1.0
  if x == -1.0:
    return {"ignore": (0.0, 0.0), "ones": (1.0, 1.0), "zeros": (0.0, 1.0)}[uncertain_policy]
  raise DataError(f"{where}: unknown label value {_one_line(v)} (expected 1, 0, -1 or blank)")


def is_absolute(path: str) -> bool:
  """True for ``/abs/path`` and ``scheme://...`` paths."""
  return path.startswith("/") or bool(_URL_RE.match(path))


def join_root(data_root: Optional[str], rel: str) -> str:
  """``data_root/rel`` unless ``rel`` is already absolute (or data_root is empty)."""
  if is_absolute(rel) or not data_root:
    return rel
  return data_root.rstrip("/") + "/" + rel


def unique_columns(columns: Optional[Sequence[str]]) -> Tuple[str, ...]:
  """Column names in first-seen order without repeats (ConfigError for an empty name)."""
  out = []
  for col in columns or ():
    if not col or not col.strip():
      raise ConfigError(f"empty column name in {list(columns)!r}")
    if col not in out:
      out.append(col)
  return tuple(out)


def check_policies(uncertain_policy: str, blank_policy: str) -> None:
  """Raises ConfigError for a policy name that is not one of the known ones."""
  if uncertain_policy not in UNCERTAIN_POLICIES:
    raise ConfigError(f"uncertain_policy must be one of {UNCERTAIN_POLICIES}, "
                      f"got {uncertain_policy!r}")
  if blank_policy not in BLANK_POLICIES:
    raise ConfigError(f"blank_policy must be one of {BLANK_POLICIES}, got {blank_policy!r}")


def read_csv_manifest(csv_path: str, **kwargs) -> Manifest:
  """Reads a CSV manifest (``.csv`` or gzip, local or ``gs://``), one row per image.

  Keyword arguments are those of :func:`manifest_from_table` (data_root, path_column,
  label_columns, task, the optional id/patient/view/site/class columns, the label
  policies and the path_fn/patient_fn/view_fn/row_filter hooks); the CSV is parsed by
  :func:`read_csv_table` after the policies are checked, so a bad policy fails before any
  I/O.
  """
  check_policies(kwargs.get("uncertain_policy", "ignore"), kwargs.get("blank_policy", "zeros"))
  return manifest_from_table(read_csv_table(csv_path), **kwargs)


def manifest_from_table(
    table: CsvTable,
    *,
    data_root: Optional[str],
    path_column: str,
    label_columns: Sequence[str],
    task: str,
    patient_column: Optional[str] = None,
    view_column: Optional[str] = None,
    site_column: Optional[str] = None,
    id_column: Optional[str] = None,
    uncertain_policy: str = "ignore",
    blank_policy: str = "zeros",
    class_column: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    path_fn: Optional[Callable[[str], str]] = None,
    patient_fn: Optional[Callable[[str, Mapping[str, str]], str]] = None,
    view_fn: Optional[Callable[[str], str]] = None,
    row_filter: Optional[Callable[[Mapping[str, str]], bool]] = None,
    attribute_columns: Sequence[str] = (),
) -> Manifest:
  """Builds a manifest from a parsed CSV (one row per image).

  Args:
    table: the parsed CSV (see :func:`read_csv_table`; ``.csv`` or gzip, local or gs://).
    data_root: folder that relative paths in ``path_column`` are resolved against;
      None → the CSV's own folder. Absolute and ``scheme://`` paths are kept as they are.
    path_column: column holding the image path.
    label_columns: K label columns (multilabel / binary, or one-hot columns for
      multiclass without ``class_column``); empty for "unlabelled".
    task: one of TASK_TYPES. "binary" needs exactly one label column; "multiclass" takes
      either ``class_column`` (class names, one-hot encoded over ``class_names`` or the
      sorted distinct values) or one-hot ``label_columns`` (exactly one 1 per row).
    patient_column, view_column, site_column: optional metadata columns.
    id_column: column holding a unique example id; default: the path cell as written.
    uncertain_policy, blank_policy: see the module docstring.
    class_column, class_names: multiclass by name (unknown names raise DataError).
    path_fn: maps the path cell to the full path (overrides ``data_root`` joining).
    patient_fn: ``(path_cell, row) → patient id`` when there is no patient column.
    view_fn: normalises the view cell (e.g. "Frontal" → "frontal").
    row_filter: keeps a row when it returns True (recipes use it for frontal-only).
    attribute_columns: extra columns kept verbatim (whitespace-stripped text) in
      ``Record.attributes``, e.g. ``("Sex", "Age", "AP/PA")`` for subgroup reports.

  Returns:
    A Manifest in file order; ``Record.source_row`` is the CSV line number.

  Raises:
    DataError: file/row problems (see module docstring), duplicated id, no rows left.
    ConfigError: invalid task/policy arguments.
  """
  check_policies(uncertain_policy, blank_policy)
  if task not in TASK_TYPES:
    raise ConfigError(f"task must be one of {TASK_TYPES}, got {task!r}")
  label_columns = tuple(label_columns or ())
  if task == "unlabelled" and (label_columns or class_column):
    raise ConfigError("task 'unlabelled' takes no label columns / class column")
  if task in ("multilabel", "binary") and not label_columns:
    raise ConfigError(f"task {task!r} needs at least one label column")
  if task == "binary" and len(label_columns) != 1:
    raise ConfigError(f"task 'binary' needs exactly one label column, got {list(label_columns)}")
  if task == "multiclass" and not class_column and len(label_columns) < 2:
    raise ConfigError("task 'multiclass' needs class_column or >= 2 one-hot label columns")
  if task == "multiclass" and class_column and label_columns:
    raise ConfigError("give either class_column or label_columns for multiclass, not both")

  csv_path = table.path
  needed = [path_column, *label_columns]
  for col in (patient_column, view_column, site_column, id_column, class_column):
    if col:
      needed.append(col)
  attribute_columns = unique_columns(attribute_columns)
  needed.extend(attribute_columns)
  table.require_columns(needed)
  if data_root is None:
    data_root = posixpath.dirname(csv_path)

  rows = [(line, row) for line, row in table.rows if row_filter is None or row_filter(row)]
  if not rows:
    raise DataError(f"{csv_path}: no rows left after filtering ({len(table.rows)} read)")

  label_names = label_columns
  class_index: Dict[str, int] = {}
  if class_column:
    if class_names:
      label_names = tuple(class_names)
    else:
      label_names = tuple(sorted({r[class_column].strip() for _, r in rows} - {""}))
    class_index = {name: i for i, name in enumerate(label_names)}

  records: List[Record] = []
  seen_ids: Dict[str, int] = {}
  for line, row in rows:
    where = f"{csv_path}:{line}"
    path_cell = row[path_column].strip()
    if not path_cell:
      raise DataError(f"{where}: column {path_column!r}: empty image path")
    example_id = row[id_column].strip() if id_column else path_cell
    if not example_id:
      raise DataError(f"{where}: column {id_column!r}: empty id")
    if example_id in seen_ids:
      col = id_column or path_column
      raise DataError(f"{where}: column {col!r}: duplicated id {_one_line(example_id)} "
                      f"(first on line {seen_ids[example_id]})")
    seen_ids[example_id] = line

    labels: Tuple[float, ...] = ()
    mask: Tuple[float, ...] = ()
    if class_column:
      name = row[class_column].strip()
      if name not in class_index:
        raise DataError(f"{where}: column {class_column!r}: unknown class name "
                        f"{_one_line(name)} (known: {', '.join(label_names)})")
      one_hot = [0.0] * len(label_names)
      one_hot[class_index[name]] = 1.0
      labels, mask = tuple(one_hot), (1.0,) * len(label_names)
    elif label_columns:
      pairs = [parse_label_value(row[c], uncertain_policy=uncertain_policy,
                                 blank_policy=blank_policy, where=f"{where}: column {c!r}")
               for c in label_columns]
      labels = tuple(p[0] for p in pairs)
      mask = tuple(p[1] for p in pairs)
      if task == "multiclass":
        if sum(labels) != 1.0 or min(mask) == 0.0:
          raise DataError(f"{where}: columns {list(label_columns)}: a multiclass row needs "
                          f"exactly one 1 and 0 elsewhere, got {[row[c] for c in label_columns]}")

    if patient_column:
      patient = row[patient_column].strip()
    elif patient_fn is not None:
      patient = patient_fn(path_cell, row)
    else:
      patient = ""
    view = row[view_column].strip() if view_column else ""
    if view_fn is not None:
      view = view_fn(view)
    site = row[site_column].strip() if site_column else ""
    full_path = path_fn(path_cell) if path_fn is not None else join_root(data_root, path_cell)
    records.append(Record(image_path=full_path, example_id=example_id, labels=labels,
                          mask=mask, patient_id=patient, view=view, site=site,
                          source_row=line,
                          attributes=tuple((c, row[c].strip()) for c in attribute_columns)))
  return Manifest(records=tuple(records), label_names=tuple(label_names), task=task,
                  source=csv_path)
