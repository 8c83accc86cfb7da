"""Subgroup specs, values from manifests, per-subgroup metrics and their flags."""

import csv
import json

import numpy as np
import pytest

from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import subgroups

# Tolerances here (docs/testing.md):
# derived: exact AUCs / count ratios in float64 (approx default rel 1e-6 >> 1e-16).


def _pair_auc(y, s):
  pos, neg = s[y == 1], s[y == 0]
  d = pos[:, None] - neg[None, :]
  return float(((d > 0) + 0.5 * (d == 0)).mean())


@pytest.mark.parametrize("text,column,edges", [
    ("Sex", "Sex", ()), ("Age:40,60,80", "Age", (40.0, 60.0, 80.0)), (" AP/PA ", "AP/PA", ()),
    ("a:b", "a:b", ()), ("Age:50", "Age", (50.0,))])
def test_parse_spec(text, column, edges):
  spec = subgroups.parse_subgroup_spec(text)
  assert (spec.column, spec.edges) == (column, edges)


@pytest.mark.parametrize("text", ["Age:60,40", "Age:1,1", ":40", "", "Age:inf"])
def test_parse_spec_rejects(text):
  with pytest.raises(ConfigError):
    subgroups.parse_subgroup_spec(text)


def test_bands_are_left_closed_and_cover_everything():
  spec = subgroups.parse_subgroup_spec("Age:40,60,80")
  assert spec.band_names() == ["<40", "[40, 60)", "[60, 80)", ">=80"]
  assert [spec.band(x) for x in (0, 39.9, 40, 59.99, 60, 80, 101)] == [
      "<40", "<40", "[40, 60)", "[40, 60)", "[60, 80)", ">=80", ">=80"]
  with pytest.raises(ConfigError, match="twice"):
    subgroups.parse_subgroup_specs(["Sex", "Sex:1"])
  assert subgroups.attribute_columns(["Sex", "view", "Age:40"]) == ("Sex", "Age")


def _manifest(rows):
  records = tuple(Record(f"/x/{i}.png", f"e{i}", (1.0,), (1.0,), patient_id=f"p{i}",
                         view=view, source_row=i + 2, attributes=attrs)
                  for i, (view, attrs) in enumerate(rows))
  return Manifest(records, ("Y",), "binary", "m.csv")


def test_subgroup_values_from_attributes_and_fields():
  m = _manifest([("frontal", (("Sex", "F"), ("Age", "39"))),
                 ("lateral", (("Sex", ""), ("Age", "61.5"))),
                 ("frontal", (("Sex", "M"), ("Age", "")))])
  assert subgroups.subgroup_values(m, "Sex").tolist() == ["F", "unknown", "M"]
  assert subgroups.subgroup_values(m, "Age:40,60").tolist() == ["<40", ">=60", "unknown"]
  assert subgroups.subgroup_values(m, "view").tolist() == ["frontal", "lateral", "frontal"]
  with pytest.raises(DataError, match="no column 'Race'.*available: Sex, Age, view, site"):
    subgroups.subgroup_values(m, "Race")
  bad = _manifest([("frontal", (("Age", "old"),))])
  with pytest.raises(DataError, match=r"m\.csv:2: column 'Age': 'old' is not a number"):
    subgroups.subgroup_values(bad, "Age:40")


def test_evaluate_subgroups_matches_independent_computation(tmp_path):
  rng = np.random.default_rng(0)
  n_big, n_small = 60, 4  # patients; two images each
  groups = np.repeat(["A"] * n_big + ["B"] * n_small, 2)
  patients = np.repeat([f"p{i}" for i in range(n_big + n_small)], 2)
  y = np.stack([rng.integers(0, 2, groups.size), rng.integers(0, 2, groups.size)], 1)
  y[groups == "B", 1] = 0  # finding 2 has no positives in group B
  s = y + rng.normal(0, 0.8, y.shape)
  rep = subgroups.evaluate_subgroups("multilabel", y, s, np.ones_like(y), patients, groups,
                                     "Sex", ["F1", "F2"], min_patients=10,
                                     num_bootstrap=200, seed=3, operating_point=0.5)
  assert list(rep["groups"]) == ["A", "B"]
  a, b = rep["groups"]["A"], rep["groups"]["B"]
  assert (a["num_examples"], a["num_patients"]) == (120, 60)
  assert (b["num_examples"], b["num_patients"]) == (8, 4)
  sel = groups == "A"
  aucs = [_pair_auc(y[sel, j], s[sel, j]) for j in range(2)]
  assert a["result"]["metrics"]["mean_auc"]["value"] == pytest.approx(np.mean(aucs))
  ci = a["result"]["per_class"]["F1"]["auc"]
  assert ci["lower"] <= aucs[0] <= ci["upper"] and ci["lower"] < ci["upper"]
  assert a["result"]["bootstrap"]["unit"] == "patient"
  assert a["interval"] and a["flags"] == []
  assert a["result"]["per_class"]["F1"]["num_positive"] == int(y[sel, 0].sum())
  # Group B: too few patients (no interval) and F2 without positives.
  assert not b["interval"] and b["result"]["metrics"]["mean_auc"]["lower"] is None
  assert b["flags"] == ["fewer than 10 patients (4): no interval", "F2: no positives"]
  assert b["result"]["per_class"]["F2"]["auc"]["value"] is None
  # Sensitivity at the fixed threshold 0.5, independently.
  sens = float((s[sel, 0][y[sel, 0] == 1] >= 0.5).mean())
  assert a["result"]["per_class"]["F1"]["sensitivity"]["value"] == pytest.approx(sens)

  subgroups.write_subgroups([rep], str(tmp_path / "s.json"), str(tmp_path / "s.csv"))
  assert json.load(open(tmp_path / "s.json"))[0]["groups"]["B"]["num_patients"] == 4
  rows = list(csv.DictReader(open(tmp_path / "s.csv")))
  auc_b2 = [r for r in rows if r["group"] == "B" and r["class"] == "F2" and r["metric"] == "auc"]
  assert len(auc_b2) == 1 and auc_b2[0]["value"] == "" and auc_b2[0]["num_positive"] == "0"
  assert "no positives" in auc_b2[0]["flags"] and auc_b2[0]["interval"] == "0"
  with pytest.raises(DataError, match="3 values"):
    subgroups.evaluate_subgroups("binary", y[:4, :1], s[:4, :1], np.ones((4, 1)),
                                 patients[:4], groups[:3], "Sex", ["F1"])
