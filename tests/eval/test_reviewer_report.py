"""Calibration and subgroup report sections from evaluate_model's files."""

import json

import numpy as np

from remedis_tf.eval import calibration, report, reviewer_report, subgroups


def test_sections_tabulate_the_written_files(tmp_path):
  rng = np.random.default_rng(0)
  n = 80
  y = rng.integers(0, 2, (n, 2)).astype(float)
  z = rng.normal(0, 2, (n, 2)) + 2 * (y - 0.5)
  patients = np.repeat(np.arange(n // 2), 2)
  fit = calibration.fit_temperature("multilabel", z, y, label_names=["A", "B"])
  temps = calibration.temperature_vector(fit, ["A", "B"])
  cal = calibration.calibration_report("multilabel", y, z, None, ["A", "B"], temps, patients,
                                       num_bins=10, num_bootstrap=50)
  cal.update(source="saved with the model", temperature=fit["temperature"],
             scope=fit["scope"])
  (tmp_path / "test_calibration.json").write_text(json.dumps(cal))
  sex = np.repeat(np.where(np.arange(n // 2) < 36, "F", "M"), 2)
  rep = subgroups.evaluate_subgroups("multilabel", y, calibration.probabilities(
      "multilabel", z, temps), np.ones_like(y), patients, sex, "Sex", ["A", "B"],
      min_patients=10, num_bootstrap=50)
  subgroups.write_subgroups([rep], str(tmp_path / "test_subgroups.json"),
                            str(tmp_path / "test_subgroups.csv"))
  dirs = {"m": str(tmp_path)}
  text = report.render_report([reviewer_report.calibration_section(dirs, ["test", "absent"]),
                               reviewer_report.subgroup_section(dirs, ["test"])], str(tmp_path))
  ece = cal["targets"]["B"]["ece_after"]
  assert report.format_ci(ece["value"], ece["lower"], ece["upper"]) in text
  assert "10 equal-width probability bins" in text
  assert f"temperatures saved with the model, per finding: A {fit['temperature']['A']:.3f}" in text
  auc = rep["groups"]["F"]["result"]["metrics"]["mean_auc"]
  assert f"| m | test | Sex | F | 72 | 36 |" in text
  assert report.format_ci(auc["value"], auc["lower"], auc["upper"]) in text
  assert "fewer than 10 patients (4): no interval" in text
  empty = report.render_report([reviewer_report.subgroup_section({"m": str(tmp_path / "x")},
                                                                 ["test"])])
  assert "No subgroup files" in empty
