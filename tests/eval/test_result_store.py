"""The resumable data-efficiency result store."""

import os

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval.data_efficiency import Cell, Row
from remedis_tf.eval.result_store import ResultStore

# Tolerances here (docs/testing.md):
# derived: a float stored and read back through JSON is exact (approx default).


def test_store_resume_and_rows(tmp_path):
  path = str(tmp_path / "sub" / "cells.json")
  store = ResultStore(path)
  assert not store.has(("remedis", 0.1, 0))
  store.add(Cell("remedis", 0.1, 0), {"metrics": {"mean_auc": {"value": 0.8, "lower": 0.7}},
                                         "n_train": 120, "loss": np.float32(0.25)})
  store.add(("baseline", 1.0, 0), {"metrics": {"mean_auc": {"value": 0.82}}, "n_train": 1200})
  store.add(("baseline", 1.0, 1), {"n_train": 1200})  # finished without the metric
  # A new process sees finished cells; fractions compare after float round-off.
  again = ResultStore(path)
  assert again.has(("remedis", 1 / 10, 0)) and again.has(Cell("baseline", 1.0, 0))
  assert not again.has(("remedis", 0.1, 1))
  assert again.get(("remedis", 0.1, 0))["loss"] == pytest.approx(0.25)
  rows = again.rows("metrics.mean_auc")
  assert rows == [Row("baseline", 1.0, 0, 0.82, 1200), Row("remedis", 0.1, 0, 0.8, 120)]
  assert [c.seed for c in again.cells()] == [0, 1, 0]
  # Two writers: the second keeps what the first added after it opened the file.
  store.add(("remedis", 0.2, 0), {"n_train": 240})
  again.add(("remedis", 0.5, 0), {"n_train": 600})
  assert ResultStore(path).has(("remedis", 0.2, 0))


def test_store_crash_mid_write_leaves_old_file(tmp_path, monkeypatch):
  path = str(tmp_path / "cells.json")
  store = ResultStore(path)
  store.add(("remedis", 0.1, 0), {"v": 1.0})
  before = open(path).read()

  def boom(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(tf.io.gfile, "rename", boom)
  with pytest.raises(OSError):
    store.add(("remedis", 0.2, 0), {"v": 2.0})
  monkeypatch.undo()
  assert open(path).read() == before
  # No temp file left behind; the (empty) lock file of ResultStore.add stays.
  assert sorted(os.listdir(tmp_path)) == ["cells.json", "cells.json.lock"]
  assert not ResultStore(path).has(("remedis", 0.2, 0))
  # A result that cannot be serialised is rejected before the file is touched.
  with pytest.raises(ConfigError, match="object"):
    store.add(("remedis", 0.3, 0), {"v": object()})
  assert open(path).read() == before


def test_store_refuses_to_replace_unreadable_file(tmp_path):
  path = tmp_path / "cells.json"
  path.write_text('{"format": "remedis_tf.ResultStore", "cells": [')
  with pytest.raises(DataError, match="cells.json"):
    ResultStore(str(path))
