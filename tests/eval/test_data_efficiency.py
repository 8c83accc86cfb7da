"""Aggregation, headline fraction, resumable store, table/plot output."""

import csv
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import data_efficiency as de
from remedis_tf.eval import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(model, means, seeds=(0, 1, 2), spread=0.01):
  """Rows whose per-fraction mean over seeds is exactly ``means[f]``."""
  offsets = np.linspace(-spread, spread, len(seeds))
  return [de.Row(model, f, s, m + o, n_train=int(1000 * f))
          for f, m in means.items() for s, o in zip(seeds, offsets)]


@pytest.mark.parametrize("p,df", [(0.975, 1), (0.975, 2), (0.975, 4), (0.95, 9), (0.995, 3),
                                  (0.9, 30), (0.025, 5), (0.975, 2.5)])
def test_t_quantile_matches_scipy(p, df):
  assert de.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-6)


def test_aggregate_mean_std_and_t_interval():
  rng = np.random.default_rng(0)
  rows = [de.Row(m, f, s, float(rng.normal(0.7, 0.05)), 100)
          for m in ("baseline", "remedis") for f in (0.1, 1.0) for s in range(5)]
  rows.append(de.Row("remedis", 0.5, 0, 0.8, 50))  # single seed
  agg = de.aggregate(rows, confidence=0.9)
  assert [(a.model, a.fraction) for a in agg] == [
      ("baseline", 0.1), ("baseline", 1.0), ("remedis", 0.1), ("remedis", 0.5),
      ("remedis", 1.0)]
  for a in agg:
    vals = np.array([r.value for r in rows if r.model == a.model and r.fraction == a.fraction])
    assert a.mean == pytest.approx(vals.mean())
    assert a.num_seeds == len(vals)
    if len(vals) > 1:
      assert a.std == pytest.approx(vals.std(ddof=1))
      lo, hi = stats.t.interval(0.9, len(vals) - 1, loc=vals.mean(), scale=stats.sem(vals))
      assert (a.lower, a.upper) == pytest.approx((lo, hi), rel=1e-6)
    else:
      assert math.isnan(a.std) and math.isnan(a.lower)
  # NaN values are left out of a cell.
  agg2 = de.aggregate([de.Row("m", 0.1, 0, 0.5), de.Row("m", 0.1, 1, float("nan")),
                       de.Row("m", 0.1, 2, 0.7)])
  assert agg2[0].num_seeds == 2 and agg2[0].mean == pytest.approx(0.6)


def test_headline_reached_exactly_at_a_measured_point():
  table = _rows("baseline", {0.1: 0.7, 1.0: 0.80}) + _rows("remedis",
                                                          {0.05: 0.6, 0.1: 0.7, 0.2: 0.80,
                                                           0.5: 0.85})
  h = de.headline_fraction(table)
  assert h.reached and h.reference_value == pytest.approx(0.80)
  assert h.first_fraction == 0.2
  assert h.interpolated_fraction == pytest.approx(0.2)
  assert h.bracket == pytest.approx((0.1, 0.7, 0.2, 0.8))


def test_headline_interpolates_log_linearly_between_points():
  table = _rows("baseline", {1.0: 0.80}) + _rows("remedis", {0.01: 0.70, 0.05: 0.78, 0.1: 0.82})
  h = de.headline_fraction(de.aggregate(table))
  assert h.first_fraction == 0.1
  # t = (0.80 - 0.78) / (0.82 - 0.78) = 0.5 → halfway on the log axis: sqrt(0.05 * 0.1).
  assert h.interpolated_fraction == pytest.approx(math.sqrt(0.05 * 0.1), rel=1e-9)
  assert "interpolated" in h.summary and "log-linear" in h.method
  # An uneven bracket: t = (0.80-0.70)/(0.82-0.70) = 5/6 between 1 % and 10 %.
  table = _rows("baseline", {1.0: 0.80}) + _rows("remedis", {0.01: 0.70, 0.1: 0.82})
  h = de.headline_fraction(table)
  assert h.interpolated_fraction == pytest.approx(0.01 * 10 ** (5 / 6), rel=1e-9)
  assert 0.01 < h.interpolated_fraction < 0.1


def test_headline_never_reached():
  table = _rows("baseline", {1.0: 0.90}) + _rows("remedis", {0.1: 0.7, 0.5: 0.85, 1.0: 0.88})
  h = de.headline_fraction(table)
  assert not h.reached
  assert h.first_fraction is None and h.interpolated_fraction is None
  assert h.best_fraction == 1.0 and h.best_value == pytest.approx(0.88)
  assert "does not reach" in h.summary and "within the measured fractions" in h.summary
  json.dumps(h.to_dict())


def test_headline_reached_at_smallest_fraction_and_first_crossing_wins():
  table = _rows("baseline", {1.0: 0.75}) + _rows("remedis", {0.01: 0.76, 0.1: 0.9})
  h = de.headline_fraction(table)
  assert h.first_fraction == 0.01 and h.interpolated_fraction == 0.01 and h.bracket is None
  assert "smallest measured fraction" in h.summary
  # Non-monotone curve: the first fraction that reaches it counts.
  table = _rows("baseline", {1.0: 0.8}) + _rows("remedis", {0.01: 0.7, 0.02: 0.81, 0.05: 0.79,
                                                           0.1: 0.85})
  assert de.headline_fraction(table).first_fraction == 0.02


def test_headline_lower_is_better_and_errors():
  table = _rows("baseline", {1.0: 0.3}) + _rows("remedis", {0.1: 0.4, 0.2: 0.2})
  h = de.headline_fraction(table, higher_is_better=False)
  # t = (0.3 - 0.4) / (0.2 - 0.4) = 0.5.
  assert h.interpolated_fraction == pytest.approx(math.sqrt(0.02))
  with pytest.raises(ConfigError, match="'baseline'"):
    de.headline_fraction(_rows("remedis", {0.1: 0.5}))
  with pytest.raises(ConfigError, match="'simclr'"):
    de.headline_fraction(table, candidate_model="simclr")
  with pytest.raises(ConfigError, match="0.5"):
    de.headline_fraction(table, reference_fraction=0.5)


# --------------------------------------------------------------------------- result store


def test_store_resume_and_rows(tmp_path):
  path = str(tmp_path / "sub" / "cells.json")
  store = de.ResultStore(path)
  assert not store.has(("remedis", 0.1, 0))
  store.add(de.Cell("remedis", 0.1, 0), {"metrics": {"mean_auc": {"value": 0.8, "lower": 0.7}},
                                         "n_train": 120, "loss": np.float32(0.25)})
  store.add(("baseline", 1.0, 0), {"metrics": {"mean_auc": {"value": 0.82}}, "n_train": 1200})
  store.add(("baseline", 1.0, 1), {"n_train": 1200})  # finished without the metric
  # A new process sees finished cells; fractions compare after float round-off.
  again = de.ResultStore(path)
  assert again.has(("remedis", 1 / 10, 0)) and again.has(de.Cell("baseline", 1.0, 0))
  assert not again.has(("remedis", 0.1, 1))
  assert again.get(("remedis", 0.1, 0))["loss"] == pytest.approx(0.25)
  rows = again.rows("metrics.mean_auc")
  assert rows == [de.Row("baseline", 1.0, 0, 0.82, 1200), de.Row("remedis", 0.1, 0, 0.8, 120)]
  assert [c.seed for c in again.cells()] == [0, 1, 0]
  # Two writers: the second keeps what the first added after it opened the file.
  store.add(("remedis", 0.2, 0), {"n_train": 240})
  again.add(("remedis", 0.5, 0), {"n_train": 600})
  assert de.ResultStore(path).has(("remedis", 0.2, 0))


def test_store_crash_mid_write_leaves_old_file(tmp_path, monkeypatch):
  path = str(tmp_path / "cells.json")
  store = de.ResultStore(path)
  store.add(("remedis", 0.1, 0), {"v": 1.0})
  before = open(path).read()

  def boom(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(tf.io.gfile, "rename", boom)
  with pytest.raises(OSError):
    store.add(("remedis", 0.2, 0), {"v": 2.0})
  monkeypatch.undo()
  assert open(path).read() == before
  assert os.listdir(tmp_path) == ["cells.json"]  # no temp file left behind
  assert not de.ResultStore(path).has(("remedis", 0.2, 0))
  # A result that cannot be serialised is rejected before the file is touched.
  with pytest.raises(ConfigError, match="object"):
    store.add(("remedis", 0.3, 0), {"v": object()})
  assert open(path).read() == before


def test_store_refuses_to_replace_unreadable_file(tmp_path):
  path = tmp_path / "cells.json"
  path.write_text('{"format": "remedis_tf.ResultStore", "cells": [')
  with pytest.raises(DataError, match="cells.json"):
    de.ResultStore(str(path))


# -------------------------------------------------------------------------------- output


def test_write_table_and_plot(tmp_path):
  table = (_rows("baseline", {0.01: 0.6, 0.1: 0.7, 1.0: 0.8})
           + _rows("remedis", {0.01: 0.7, 0.1: 0.79, 1.0: 0.85}))
  agg = de.aggregate(table)
  h = de.headline_fraction(agg)
  csv_path, md_path = str(tmp_path / "t.csv"), str(tmp_path / "t.md")
  de.write_table(table, csv_path, md_path, metric_name="AUC", headline=h)
  rows = list(csv.DictReader(open(csv_path)))
  assert len(rows) == 6 and tuple(rows[0]) == de.TABLE_COLUMNS
  r = [x for x in rows if x["model"] == "remedis" and float(x["fraction"]) == 0.1][0]
  assert float(r["mean"]) == pytest.approx(0.79) and r["num_seeds"] == "3"
  md = open(md_path).read()
  a = [x for x in agg if x.model == "remedis" and x.fraction == 0.1][0]
  assert f"0.790 [{a.lower:.3f}, {a.upper:.3f}]" in md
  assert "| 10% |" in md and "remedis AUC" in md and h.summary in md

  png = str(tmp_path / "curve.png")
  assert plots.plot_data_efficiency(agg, png, "AUC", headline=h) == png
  data = open(png, "rb").read()
  assert data[:8] == PNG_MAGIC and len(data) > 1000
  # One seed per cell (no CI) and an explicit reference line still plot.
  plots.plot_data_efficiency([de.Row("remedis", 0.1, 0, 0.5)], png, "AUC", reference=0.6)
  assert open(png, "rb").read()[:8] == PNG_MAGIC
