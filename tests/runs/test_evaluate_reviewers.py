"""What clinical reviewers ask for: temperature saved with the classifier and used by its
export, calibration files, and subgroup reports from evaluate_model."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.errors import DataError
from remedis_tf.eval import calibration, subgroups
from remedis_tf.runs import classifier, stages
from remedis_tf.runs import evaluate as evaluation
from remedis_tf.weights import classifier_export
from tests.runs.test_evaluate import SIZE, trained  # noqa: F401  (module fixture)
from tests.eval.test_calibration import _loop_ece


def _sigmoid(z):
  return np.exp(-np.logaddexp(0.0, -z))


def _pair_auc(y, s):
  pos, neg = s[y == 1], s[y == 0]
  d = pos[:, None] - neg[None, :]
  return float(((d > 0) + 0.5 * (d == 0)).mean())


def test_best_checkpoint_has_its_temperature_and_export_uses_it(trained, tmp_path):  # noqa: F811
  record = calibration.read_temperature(os.path.join(trained["run_dir"], stages.BEST_SUBDIR))
  assert record is not None and record["label_names"] == ["Bright", "Noise"]
  assert record["scope"] == "per finding"
  # 16 validation images are too few to fit a temperature: T = 1, the reason recorded and
  # printed once as a warning.
  assert record["temperature"] == {"Bright": 1.0, "Noise": 1.0}
  assert set(record["fallback"]) == {"Bright", "Noise"}
  assert "16 labelled validation example(s)" in record["fallback"]["Bright"]
  warned = [line for line in trained["logs"] if line.startswith("[calibration] WARNING:")]
  assert warned and all("best/temperature.json" in line for line in warned)
  assert any("Bright" in line and "too few" in line for line in warned)
  model = classifier.load_model(trained["run_dir"])
  assert model.temperature == record
  val = model.predict(trained["sets"]["val"], keep=("scores", "logits"))
  # Independent refit on the same validation logits gives the saved temperatures.
  refit = calibration.fit_temperature("multilabel", val.logits, val.labels, val.mask,
                                      ["Bright", "Noise"])
  # The record was fitted on the same logits from another code path (training-time eval):
  # they differ by float32 rounding (~1e-6 relative), which moves the float64 NLL minimum by
  # about as much; rel=1e-4 is >= 10x that and far below a refit on other data.
  for name in ("Bright", "Noise"):
    assert refit["temperature"][name] == pytest.approx(record["temperature"][name], rel=1e-4)
  temps = calibration.temperature_vector(record, ["Bright", "Noise"])
  # Derived: a float32 sigmoid(logit / T) against float64 is within a few 2^-24 on [0, 1]
  # (~1e-7); atol 1e-5 here and below. T = 1 instead would be off by > 1e-3 (checked below).
  np.testing.assert_allclose(val.scores, _sigmoid(val.logits / temps), atol=1e-5)
  # The latest checkpoint is not the one the temperatures were fitted for.
  assert classifier.load_model(trained["run_dir"], which="latest").temperature is None

  task, _ = stages.load_classifier(trained["run_dir"])
  forced = {**record, "temperature": {"Bright": 2.5, "Noise": 0.5}}
  export = classifier.export_classifier_savedmodel(task, str(tmp_path / "clf"),
                                                   temperature=forced)
  module = tf.saved_model.load(export)
  np.testing.assert_allclose(module.temperature.numpy(), [2.5, 0.5])  # exact in float32
  images = tf.random.stateless_uniform([3, SIZE, SIZE, 3], seed=[1, 2])
  logits = module.logits(images).numpy()
  np.testing.assert_allclose(module(images).numpy(), _sigmoid(logits / [2.5, 0.5]), atol=1e-5)
  assert not np.allclose(module(images).numpy(), _sigmoid(logits), atol=1e-3)
  served = module.signatures["serving_default"](images=images)
  # The serving signature and __call__ run the same traced ops in one process: equal up to
  # the default rtol 1e-7.
  np.testing.assert_allclose(served["probabilities"].numpy(), module(images).numpy())
  sidecar = classifier_export.read_sidecar(export)
  assert sidecar["temperature"]["temperature"] == forced["temperature"]
  assert sidecar["temperature"]["fallback"] == record["fallback"]
  assert classifier.load_model(export).temperature["temperature"] == forced["temperature"]


def _with_attributes(manifest):
  records = []
  for r in manifest.records:
    p = int(r.patient_id[1:])
    records.append(dataclasses.replace(r, attributes=(("Sex", "FM"[(p // 2) % 2]),
                                                      ("Age", str(20 + 7 * p)))))
  return dataclasses.replace(manifest, records=tuple(records))


def test_evaluate_writes_subgroups_and_calibration(trained, tmp_path):  # noqa: F811
  out = str(tmp_path / "eval")
  sets = {"val": trained["sets"]["val"], "id_test": _with_attributes(trained["sets"]["id_test"])}
  with pytest.raises(DataError, match="no column 'Sex'"):
    evaluation.evaluate_model(trained["run_dir"], sets, out, num_bootstrap=0,
                              subgroups=["Sex"], log=lambda _: None)
  assert not os.path.exists(out)
  sets["val"] = _with_attributes(sets["val"])
  summary = evaluation.evaluate_model(
      trained["run_dir"], sets, out, num_bootstrap=100, val_set="val",
      subgroups=["Sex", "Age:40,60", "view"], subgroup_min_patients=4, calibration_bins=5,
      log=lambda _: None)
  assert summary["subgroups"] == ["Sex", "Age:40,60", "view"]
  assert summary["calibration"]["source"] == "saved with the model"
  rows = list(csv.DictReader(open(os.path.join(out, "id_test_predictions.csv"))))
  ids = np.array([r["id"] for r in rows])
  y = np.array([float(r["label:Bright"]) for r in rows])
  s = np.array([float(r["score:Bright"]) for r in rows])
  by_id = {r.example_id: r for r in sets["id_test"].records}
  sex = np.array([by_id[i].attribute("Sex") for i in ids])
  age = np.array([float(by_id[i].attribute("Age")) for i in ids])
  reports = json.load(open(os.path.join(out, "id_test_subgroups.json")))
  assert [r["column"] for r in reports] == ["Sex", "Age", "view"]
  sex_groups = reports[0]["groups"]
  assert list(sex_groups) == ["F", "M"]
  for g in ("F", "M"):
    sel = sex == g
    entry = sex_groups[g]
    assert entry["num_examples"] == int(sel.sum())
    assert entry["num_patients"] == len({by_id[i].patient_id for i in ids[sel]})
    auc = entry["result"]["per_class"]["Bright"]["auc"]
    # Exact AUC (pair counting) of the same written scores, float64: summation order only.
    assert auc["value"] == pytest.approx(_pair_auc(y[sel], s[sel]), abs=1e-6)
  age_groups = reports[1]["groups"]
  # Band order survives the JSON file (which sorts keys: "<40", ">=60", "[40, 60)").
  assert reports[1]["order"] == ["<40", "[40, 60)", ">=60"]
  assert [g for g, _ in subgroups.ordered_groups(reports[1])] == reports[1]["order"]
  for band, sel in (("<40", age < 40), ("[40, 60)", (age >= 40) & (age < 60)),
                    (">=60", age >= 60)):
    assert age_groups[band]["num_examples"] == int(sel.sum())
  # The view column is blank in these CSV-less manifests: one "unknown" group.
  assert reports[2]["groups"]["unknown"]["num_examples"] == len(rows)
  small = [g for rep in reports for g in rep["groups"].values() if g["num_patients"] < 4]
  assert all(not g["interval"] and g["flags"] for g in small)
  sub_rows = list(csv.DictReader(open(os.path.join(out, "id_test_subgroups.csv"))))
  assert {r["column"] for r in sub_rows} == {"Sex", "Age", "view"}
  age_rows = [r["group"] for r in sub_rows if r["column"] == "Age" and r["metric"] == "mean_auc"]
  assert age_rows == ["<40", "[40, 60)", ">=60"]

  cal = json.load(open(os.path.join(out, "id_test_calibration.json")))
  assert cal["num_bins"] == 5 and "equal-width" in cal["binning"]
  # The model's scores are the temperature-scaled probabilities: ECE "after" is theirs.
  # Same ECE of the same written scores in float64 (summation order only, ~1e-16).
  assert cal["targets"]["Bright"]["ece_after"]["value"] == pytest.approx(
      _loop_ece(y, s, 5), abs=1e-6)
  assert os.path.getsize(os.path.join(out, "id_test_reliability.png")) > 1000

  logs = []
  latest = evaluation.evaluate_model(trained["run_dir"], sets, str(tmp_path / "latest"),
                                     num_bootstrap=0, val_set="val", which="latest",
                                     log=logs.append)
  assert latest["calibration"]["source"].startswith("fitted on val by this evaluation")
  # Fitted here on 16 images: too few, T = 1 with the reason in the summary and a warning.
  assert latest["calibration"]["temperature"] == {"Bright": 1.0, "Noise": 1.0}
  assert "too few" in latest["calibration"]["fallback"]["Bright"]
  assert any(line.startswith("[calibration] WARNING: temperature of Bright") for line in logs)
  none = evaluation.evaluate_model(trained["run_dir"], {"id_test": sets["id_test"]},
                                   str(tmp_path / "none"), num_bootstrap=0, which="latest",
                                   log=lambda _: None)
  assert none["calibration"]["temperature"] is None
  cal = json.load(open(tmp_path / "none" / "id_test_calibration.json"))
  assert cal["targets"]["Bright"]["ece_after"] is None
