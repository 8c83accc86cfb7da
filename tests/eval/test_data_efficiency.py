"""Aggregation, headline fraction, table/plot output."""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from remedis_tf.errors import ConfigError
from remedis_tf.eval import data_efficiency as de
from remedis_tf.eval import plots

# Tolerances here (docs/testing.md):
# derived. Everything is float64 numpy. t_quantile is our own series/bisection against
# scipy's t.ppf: its documented accuracy is 1e-9 relative, rel=1e-6 leaves 1000x. Means,
# stds and interpolations of a few exact decimals: float64 rounding ~1e-16, so
# pytest.approx's default rel 1e-6 (and rel=1e-9 for the closed forms) are far above it.

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
  assert md.startswith("AUC: mean over seeds [95% Student-t interval over seeds]")
  assert r["interval"] == "t"

  png = str(tmp_path / "curve.png")
  assert plots.plot_data_efficiency(agg, png, "AUC", headline=h) == png
  data = open(png, "rb").read()
  assert data[:8] == PNG_MAGIC and len(data) > 1000
  # One seed per cell (no CI) and an explicit reference line still plot.
  plots.plot_data_efficiency([de.Row("remedis", 0.1, 0, 0.5)], png, "AUC", reference=0.6)
  assert open(png, "rb").read()[:8] == PNG_MAGIC


def test_table_header_names_the_interval_it_shows(tmp_path):
  """The header said "95 % t-interval" whatever the cells held."""
  def header(table):
    de.write_table(table, str(tmp_path / "t.csv"), str(tmp_path / "t.md"), "AUC")
    return open(tmp_path / "t.md").read().splitlines()[0]

  one_seed = [de.Row("baseline", f, 0, 0.6 + f / 10) for f in (0.1, 1.0)]
  assert header(one_seed) == "AUC: mean over seeds [one seed per cell: no interval]"
  mixed = one_seed + [de.Row("baseline", 0.1, 1, 0.65)]
  assert header(mixed) == ("AUC: mean over seeds [95% Student-t interval over seeds (none "
                           "where a cell has one seed)]")
  boot = [de.AggregateRow("baseline", f, 0.7, 0.01, 0.68, 0.72, 3, confidence=0.9,
                          interval="bootstrap") for f in (0.1, 1.0)]
  assert header(boot) == ("AUC: mean over seeds [90% percentile bootstrap interval, "
                          "resampling seeds and test patients]")
  boot1 = [dataclasses.replace(r, num_seeds=1) for r in boot]
  assert header(boot1) == ("AUC: mean over seeds [90% percentile bootstrap interval, "
                           "resampling test patients (one seed per cell)]")
  rows = list(csv.DictReader(open(tmp_path / "t.csv")))
  assert {r["interval"] for r in rows} == {"bootstrap"}
