"""The data-efficiency result store: finished (model, fraction, seed) cells and their
metrics in one resumable JSON file (what lets a sweep be re-run and resume)."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils, remote_io
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval.data_efficiency import Cell, Row


def _json_safe(obj: Any) -> Any:
  """Recursively converts numpy scalars/arrays and non-finite floats (→ None) for JSON."""
  if isinstance(obj, Mapping):
    return {str(k): _json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, np.ndarray)):
    return [_json_safe(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if obj is None or isinstance(obj, str):
    return obj
  raise ConfigError(f"result value of type {type(obj).__name__} is not JSON-serialisable")


class ResultStore:
  """Finished (model, fraction, seed) cells and their metrics in one JSON file.

  Every :meth:`add` re-reads the file (to keep cells other processes finished meanwhile;
  under a lock file beside it, for local files),
  then rewrites it atomically (temporary file + rename), so an interrupted write leaves
  the previous file intact. Only finished cells are added, so a failed run never replaces
  an earlier result. A file that exists but cannot be parsed raises DataError instead of
  being silently replaced.

  File shape: ``{"format": "remedis_tf.ResultStore", "version": 1, "cells": [{"model",
  "fraction", "seed", "result": {...}, "finished_at": ISO time}, ...]}``.
  """

  FORMAT = "remedis_tf.ResultStore"

  def __init__(self, path: str):
    self.path = path
    self._cells: Dict[Tuple[str, float, int], Dict[str, Any]] = self._load()

  def _load(self) -> Dict[Tuple[str, float, int], Dict[str, Any]]:
    if not tf.io.gfile.exists(self.path):
      return {}
    try:
      with tf.io.gfile.GFile(self.path, "r") as f:
        data = json.load(f)
      if data.get("format") != self.FORMAT:
        raise ValueError(f"format is {data.get('format')!r}")
      cells = {}
      for entry in data["cells"]:
        cell = Cell(str(entry["model"]), float(entry["fraction"]), int(entry["seed"]))
        cells[cell.key()] = entry
      return cells
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise DataError(f"result store {self.path} is unreadable ({e}); move it aside to start "
                      "a new one") from None

  @staticmethod
  def _cell(cell: Union[Cell, Tuple[str, float, int]]) -> Cell:
    return cell if isinstance(cell, Cell) else Cell(str(cell[0]), float(cell[1]), int(cell[2]))

  def has(self, cell: Union[Cell, Tuple[str, float, int]]) -> bool:
    """True if the cell (``Cell`` or ``(model, fraction, seed)``) already finished."""
    return self._cell(cell).key() in self._cells

  def get(self, cell: Union[Cell, Tuple[str, float, int]]) -> Optional[Dict[str, Any]]:
    """The stored result dict of a finished cell, else None."""
    entry = self._cells.get(self._cell(cell).key())
    return None if entry is None else entry["result"]

  def add(self, cell: Union[Cell, Tuple[str, float, int]], result: Mapping[str, Any]) -> None:
    """Records a finished cell's result (JSON-serialisable dict, e.g. metrics + n_train).

    Adding a cell that is already present replaces its result (a deliberate rerun).
    """
    cell = self._cell(cell)
    entry = {"model": cell.model, "fraction": cell.fraction, "seed": cell.seed,
             "result": _json_safe(dict(result)),
             "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    with _exclusive(self.path):
      cells = self._load()
      cells[cell.key()] = entry
      ordered = [cells[k] for k in sorted(cells)]
      io_utils.atomic_write_json(self.path, {"format": self.FORMAT, "version": 1,
                                             "cells": ordered})
    self._cells = cells

  def cells(self) -> List[Cell]:
    """Finished cells, sorted by model, fraction, seed."""
    return [Cell(e["model"], e["fraction"], e["seed"]) for _, e in sorted(self._cells.items())]

  def rows(self, metric: str, n_train_key: str = "n_train") -> List[Row]:
    """Table rows for one metric. A result's ``metric`` entry may be a number or a CI dict
    with ``value`` (as in :func:`remedis_tf.eval.task_metrics.evaluate_predictions`); dotted
    names reach into nested dicts (``"metrics.mean_auc"``). Cells without it are skipped."""
    out = []
    for _, e in sorted(self._cells.items()):
      found, value = _lookup(e["result"], metric)
      if not found:
        continue
      if isinstance(value, Mapping):
        value = value.get("value")
      n_train = e["result"].get(n_train_key)
      out.append(Row(e["model"], float(e["fraction"]), int(e["seed"]),
                     float("nan") if value is None else float(value),
                     None if n_train is None else int(n_train)))
    return out


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
  """Holds an exclusive lock on ``path + ".lock"`` (local files; a no-op elsewhere), so
  processes adding cells side by side (a parallel sweep) never lose each other's cell in
  the read-modify-write of :meth:`ResultStore.add`."""
  if remote_io.is_remote(path):
    yield
    return
  io_utils.ensure_dir(os.path.dirname(os.path.abspath(path)))
  with open(path + ".lock", "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _lookup(result: Mapping[str, Any], dotted: str) -> Tuple[bool, Any]:
  """(found, value) of a dotted key path in nested dicts."""
  node: Any = result
  for part in dotted.split("."):
    if not isinstance(node, Mapping) or part not in node:
      return False, None
    node = node[part]
  return True, node
