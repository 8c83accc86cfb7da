"""evaluate_model on a tiny fine-tuned run, operating points, and the classifier SavedModel
and preset (remedis_tf.runs.classifier)."""

import csv
import dataclasses
import json
import os

import keras_hub
import numpy as np
import pytest

from remedis_tf.data import decode
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import calibration
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import classifier, stages
from remedis_tf.runs import evaluate as evaluation
from remedis_tf.weights import classifier_export
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig
from tests.eval.tiny_data import brightness_set

SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run fine-tuned on the brightness task (2 labels: one learnable, one noise)."""
  root = str(tmp_path_factory.mktemp("evaluation"))
  names = ("Bright", "Noise")
  train, _ = brightness_set(root, "train", 12, seed=0, label_names=names)
  sets = {"val": brightness_set(root, "val", 8, seed=1, label_names=names)[0],
          "id_test": brightness_set(root, "test", 10, seed=2, label_names=names)[0],
          "ood_site_b": brightness_set(root, "site_b", 10, seed=3, shift=0.1,
                                       label_names=names)[0]}
  run_dir = os.path.join(root, "run")
  config = SupervisedConfig(variant="tiny", global_batch_size=12, seed=1)
  opt = OptimizerConfig(name="sgd", base_lr=0.05, lr_scaling="none", schedule="constant",
                        total_steps=20, weight_decay=0.0)
  logs = []
  stages.run_supervised(train, config, opt, None, SIZE,
                        LoopConfig(run_dir, 20, steps_per_loop=10), validation=sets["val"],
                        log=logs.append)
  return {"root": root, "run_dir": run_dir, "sets": sets, "logs": logs}


def _auc(labels, scores):
  pos, neg = scores[labels == 1], scores[labels == 0]
  diff = pos[:, None] - neg[None, :]
  return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _read_predictions(path):
  with open(path) as f:
    rows = list(csv.DictReader(f))
  return rows


def test_evaluate_two_sets_writes_metrics_with_cis(trained, tmp_path):
  out = str(tmp_path / "eval")
  summary = evaluation.evaluate_model(
      trained["run_dir"], {"id_test": trained["sets"]["id_test"],
                           "ood_site_b": trained["sets"]["ood_site_b"]},
      out, num_bootstrap=200, log=lambda _: None)
  for name in ("id_test", "ood_site_b"):
    for suffix in (".json", ".csv", "_predictions.csv"):
      assert os.path.exists(os.path.join(out, name + suffix))
    row = summary["sets"][name]
    assert row["metric"] == "mean_auc" and row["num_examples"] == 20
    assert row["num_patients"] == 10
    assert row["lower"] <= row["value"] <= row["upper"]
    result = json.load(open(os.path.join(out, f"{name}.json")))
    assert result["bootstrap"]["unit"] == "patient"
    assert set(result["per_class"]) == {"Bright", "Noise"}
    # Independent check: mean of per-class AUCs from the written per-image predictions.
    rows = _read_predictions(os.path.join(out, f"{name}_predictions.csv"))
    aucs = [_auc(np.array([float(r[f"label:{c}"]) for r in rows]),
                 np.array([float(r[f"score:{c}"]) for r in rows])) for c in ("Bright", "Noise")]
    # Same exact AUCs from the scores written to CSV (decimal round trip of float32 scores
    # keeps their order); abs=1e-5 only covers the float64 mean/percentile arithmetic.
    assert row["value"] == pytest.approx(np.mean(aucs), abs=1e-5)
    # The summary carries the count of resamples where mean AUC was undefined.
    assert row["num_undefined"] == result["metrics"]["mean_auc"]["num_undefined"]
    assert row["num_undefined"] >= max(result["per_class"][c]["auc"]["num_undefined"]
                                       for c in ("Bright", "Noise"))
  assert summary["operating_point"]["chosen_on"] is None
  assert summary["operating_point"]["thresholds"] == {"Bright": 0.5, "Noise": 0.5}
  with open(os.path.join(out, "summary.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["set"] for r in rows] == ["id_test", "ood_site_b"]
  assert float(rows[0]["lower"]) <= float(rows[0]["value"]) <= float(rows[0]["upper"])
  assert int(rows[0]["num_undefined"]) == summary["sets"]["id_test"]["num_undefined"]
  assert json.load(open(os.path.join(out, "summary.json")))["sets"] == summary["sets"]


def test_operating_point_chosen_on_validation_and_failures_keep_results(trained, tmp_path):
  out = str(tmp_path / "eval")
  sets = {"val": trained["sets"]["val"], "id_test": trained["sets"]["id_test"]}
  summary = evaluation.evaluate_model(trained["run_dir"], sets, out, num_bootstrap=0,
                                      operating_point="sensitivity:0.75", val_set="val",
                                      log=lambda _: None)
  op = summary["operating_point"]
  assert op["chosen_on"] == "val" and op["rule"] == "sensitivity:0.75"
  rows = _read_predictions(os.path.join(out, "val_predictions.csv"))
  for name in ("Bright", "Noise"):
    y = np.array([float(r[f"label:{name}"]) for r in rows])
    # Scores are float32, written with enough digits to round-trip as float32.
    s = np.array([float(r[f"score:{name}"]) for r in rows], np.float32)
    t = np.float32(op["thresholds"][name])
    # Sensitivity at the chosen threshold reaches the target; any higher observed positive
    # score would not (it is the largest such threshold).
    assert (s[y == 1] >= t).mean() >= 0.75
    higher = s[(y == 1) & (s > t)]
    if higher.size:
      assert (s[y == 1] >= higher.min()).mean() < 0.75
  written = json.load(open(os.path.join(out, "id_test.json")))
  # A threshold stored in and read back from JSON is exact (approx default).
  assert written["per_class"]["Bright"]["threshold"] == pytest.approx(op["thresholds"]["Bright"])
  assert summary["sets"]["val"]["role"].startswith("validation")
  before = open(os.path.join(out, "summary.json")).read()
  # A set that has none of the model's labels fails before anything is written.
  bad = Manifest(trained["sets"]["id_test"].records, ("Other", "Else"), "multilabel", "bad")
  with pytest.raises(DataError, match="none of the model's labels"):
    evaluation.evaluate_model(trained["run_dir"], {"id_test": bad}, out, num_bootstrap=0,
                              log=lambda _: None)
  assert open(os.path.join(out, "summary.json")).read() == before
  with pytest.raises(ConfigError, match="val_set"):
    evaluation.evaluate_model(trained["run_dir"], sets, out, val_set="nope",
                              log=lambda _: None)


def test_a_set_without_some_of_the_models_labels_is_scored_on_the_shared_ones(
    trained, tmp_path):
  """A set labelled for Noise only (as --eval_label_columns=Noise reads it) is scored on
  Noise; Bright is listed as missing, on the console and in the summary."""
  full = trained["sets"]["id_test"]
  noise_only = Manifest(tuple(dataclasses.replace(r, labels=r.labels[1:], mask=r.mask[1:])
                              for r in full.records), ("Noise",), "binary", "noise.csv")
  logs = []
  summary = evaluation.evaluate_model(
      trained["run_dir"], {"val": trained["sets"]["val"], "full": full, "noise": noise_only},
      str(tmp_path / "eval"), num_bootstrap=20, val_set="val", calibration_bins=5,
      log=logs.append)
  assert summary["sets"]["noise"]["missing_labels"] == ["Bright"]
  assert summary["sets"]["full"]["missing_labels"] == []
  assert any(line.startswith("[evaluate] noise: no labels for ['Bright']") for line in logs)
  scored = json.load(open(tmp_path / "eval" / "noise.json"))
  reference = json.load(open(tmp_path / "eval" / "full.json"))
  assert list(scored["per_class"]) == ["Noise"] and scored["missing_labels"] == ["Bright"]
  # Same images, same model output column, same threshold: the Noise numbers agree.
  assert scored["per_class"]["Noise"] == reference["per_class"]["Noise"]
  assert summary["sets"]["noise"]["value"] == reference["per_class"]["Noise"]["auc"]["value"]
  rows = _read_predictions(str(tmp_path / "eval" / "noise_predictions.csv"))
  assert [k for k in rows[0] if k.startswith("score:")] == ["score:Noise"]
  cal = json.load(open(tmp_path / "eval" / "noise_calibration.json"))
  assert list(cal["targets"]) == ["Noise"]
  # Validation labelled for Noise only: Bright gets the fixed threshold 0.5 and T = 1.
  only = evaluation.evaluate_model(trained["run_dir"], {"val": noise_only, "full": full},
                                   str(tmp_path / "eval2"), num_bootstrap=0, val_set="val",
                                   which="latest", log=lambda _: None)
  assert only["operating_point"]["thresholds"]["Bright"] == 0.5
  assert "Bright: not labelled in val, fixed 0.5" in only["operating_point"]["notes"]
  assert only["calibration"]["temperature"]["Bright"] == 1.0
  assert only["calibration"]["fallback"]["Bright"] == "not labelled in val"


def test_classifier_savedmodel_gives_the_same_scores(trained, tmp_path):
  task, _ = stages.load_classifier(trained["run_dir"])
  export = classifier.export_classifier_savedmodel(task, str(tmp_path / "clf"),
                                                   source=trained["run_dir"])
  sidecar = classifier_export.read_sidecar(export)
  assert sidecar["label_names"] == ["Bright", "Noise"]
  assert sidecar["task"] == "multilabel" and sidecar["image_size"] == SIZE
  manifest = trained["sets"]["id_test"]
  from_run = classifier.load_model(trained["run_dir"]).predict(manifest)
  from_saved = classifier.load_model(export).predict(manifest)
  # The same float32 model through two code paths (run checkpoint vs SavedModel / preset):
  # tolerances relative to the logits' scale as for BiT parity (bit_reference.REL_TOL,
  # 1e-4: measured <= 4.2e-6 per path against float64 across numerics-matrix rows, >= 10x
  # margin); scores move by at most 1/4 of the logits (sigmoid' <= 1/4).
  logit_tol = 1e-4 * max(1.0, float(np.max(np.abs(
      classifier.load_model(trained["run_dir"]).predict(manifest, keep=("logits",)).logits))))
  np.testing.assert_allclose(from_saved.scores, from_run.scores, atol=logit_tol / 4)
  # Logits travel with the scores (multi-class ranks are computed from them).
  from_run = classifier.load_model(trained["run_dir"]).predict(manifest, keep=("scores", "logits"))
  from_saved = classifier.load_model(export).predict(manifest, keep=("scores", "logits"))
  np.testing.assert_allclose(from_saved.logits, from_run.logits, atol=logit_tol)
  # Scores are the calibrated probabilities of those logits (T = 1 without a fitted record).
  temps = calibration.temperature_vector(task.temperature, task.manifest.label_names)
  # float32 sigmoid of the same logits against float64: <= a few 2^-24 on [0, 1].
  np.testing.assert_allclose(1.0 / (1.0 + np.exp(-from_run.logits / temps)), from_run.scores,
                             atol=1e-6)
  # A classifier preset carries the same temperatures, so its calibrated scores agree too.
  preset_dir = classifier.export_classifier_preset(task, str(tmp_path / "clf_preset"))
  from_preset = classifier.load_model(preset_dir).predict(manifest, keep=("scores", "logits"))
  assert classifier.load_model(preset_dir).temperature == task.temperature
  np.testing.assert_allclose(from_preset.scores, from_run.scores, atol=logit_tol / 4)
  np.testing.assert_allclose(from_preset.logits, from_run.logits, atol=logit_tol)
  out_a, out_b = str(tmp_path / "a"), str(tmp_path / "b")
  a = evaluation.evaluate_model(trained["run_dir"], {"id_test": manifest}, out_a,
                                num_bootstrap=50, log=lambda _: None)
  b = evaluation.evaluate_model(export, {"id_test": manifest}, out_b, num_bootstrap=50,
                                log=lambda _: None)
  assert b["model_kind"] == "savedmodel"
  # AUC is a rank statistic: both paths give the same value unless two of the 20 scores lie
  # within the rounding difference above (then it moves by >= 1/(n_pos n_neg) >> 1e-6); the
  # float64 averaging of equal ranks differs by ~1e-16. abs=1e-6 asserts the same ranking.
  assert b["sets"]["id_test"]["value"] == pytest.approx(a["sets"]["id_test"]["value"],
                                                        abs=1e-6)
  # Re-exporting over it works; a foreign non-empty directory is never replaced.
  classifier.export_classifier_savedmodel(task, export)
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "keep.txt").write_text("x")
  with pytest.raises(Exception, match="refusing"):
    classifier.export_classifier_savedmodel(task, str(foreign))
  assert (foreign / "keep.txt").exists()


def test_classifier_preset_gives_the_same_scores(trained, tmp_path):
  task, _ = stages.load_classifier(trained["run_dir"])
  export = classifier.export_classifier_preset(task, str(tmp_path / "preset"),
                                               source=trained["run_dir"])
  loaded = classifier.load_model(export)
  assert loaded.kind == "preset" and loaded.label_names == ("Bright", "Noise")
  assert loaded.task == "multilabel" and loaded.image_size == SIZE
  assert loaded.info["metadata"]["source"] == trained["run_dir"]
  manifest = trained["sets"]["id_test"]
  from_run = classifier.load_model(trained["run_dir"]).predict(manifest)
  from_preset = loaded.predict(manifest)
  # Same layers, same weights, same ops: identical scores.
  np.testing.assert_array_equal(from_preset.scores, from_run.scores)
  # KerasHub's own loader: ImageClassifier.from_preset(...).predict on the decoded images
  # (its preprocessor applies the eval crop + resize) gives the scores evaluate reports.
  hub = keras_hub.models.ImageClassifier.from_preset(export)
  images = np.stack([decode.read_image_numpy(r.image_path) for r in manifest.records])
  # Same float32 weights and ops; predict compiles the model and the preprocessing into
  # other graphs than our pipeline, where float32 sums may be reordered: bound 1e-6 on
  # probabilities in (0, 1).
  np.testing.assert_allclose(hub.predict(images, verbose=0), from_run.scores, rtol=0, atol=1e-6)
  # A backbone preset is not a classifier.
  from remedis_tf.weights import preset  # pylint: disable=g-import-not-at-top
  backbone = preset.save_to_preset(task.backbone, str(tmp_path / "bb"))
  with pytest.raises(ConfigError, match="a backbone, not a classifier"):
    classifier.load_model(backbone)




def test_bad_set_names_and_sources(tmp_path):
  with pytest.raises(ConfigError, match="summary"):
    evaluation.check_set_names(["summary"])
  with pytest.raises(ConfigError):
    evaluation.check_set_names(["a/b"])
  with pytest.raises(ConfigError, match="neither"):
    classifier.load_model(str(tmp_path))
