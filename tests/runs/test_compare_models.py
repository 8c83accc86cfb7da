"""compare_models: two tiny fine-tuned runs on the same sets → paired findings.json."""

import dataclasses
import json
import os

import numpy as np
import pytest
from sklearn import metrics as skm

from remedis_tf.errors import ConfigError
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import classifier, compare_models, stages
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig
from tests.eval.tiny_data import brightness_set

SIZE = 32
# Tolerances here (docs/testing.md): derived. The estimate is a difference of two mean
# AUCs that this test recomputes with sklearn from the same float32 scores; both sum the
# same pair comparisons exactly (ties counted 1/2), so they agree to float64 rounding.


def _train(root, name, steps, train, val):
  run_dir = os.path.join(root, name)
  opt = OptimizerConfig(name="sgd", base_lr=0.05, lr_scaling="none", schedule="constant",
                        total_steps=steps, weight_decay=0.0)
  stages.run_supervised(train, SupervisedConfig(variant="tiny", global_batch_size=12, seed=1),
                        opt, None, SIZE, LoopConfig(run_dir, steps, steps_per_loop=steps),
                        validation=val, log=lambda _: None)
  return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("compare"))
  names = ("Bright", "Noise")
  train, _ = brightness_set(root, "train", 12, seed=0, label_names=names)
  val = brightness_set(root, "val", 8, seed=1, label_names=names)[0]
  sets = {"id_test": brightness_set(root, "test", 10, seed=2, label_names=names)[0],
          "site_b": brightness_set(root, "site_b", 10, seed=3, shift=0.1,
                                   label_names=names)[0]}
  return {"root": root, "sets": sets, "trained": _train(root, "trained", 20, train, val),
          "barely": _train(root, "barely", 1, train, val)}


def _mean_auc(run_dir, manifest):
  preds = classifier.load_model(run_dir).predict(manifest)
  aucs = [skm.roc_auc_score(preds.labels[preds.mask[:, k] > 0, k],
                            preds.scores[preds.mask[:, k] > 0, k])
          for k in range(preds.labels.shape[1])]
  return float(np.mean(aucs))


def test_findings_are_paired_differences_with_verdicts(runs, tmp_path):
  out = str(tmp_path / "cmp")
  lines = []
  doc = compare_models.compare_models(runs["trained"], runs["barely"], runs["sets"], out,
                                      id_sets=("id_test",), num_bootstrap=200,
                                      log=lines.append)
  assert json.load(open(os.path.join(out, "findings.json"))) == json.loads(json.dumps(doc))
  by_name = {f["name"]: f for f in doc["findings"]}
  assert set(by_name) == {"id_test", "ood_site_b"}  # id_ prefix kept, ood_ added
  for set_name, item in (("id_test", by_name["id_test"]), ("site_b", by_name["ood_site_b"])):
    manifest = runs["sets"][set_name]
    want = _mean_auc(runs["trained"], manifest) - _mean_auc(runs["barely"], manifest)
    assert item["estimate"] == pytest.approx(want, abs=1e-9)
    lo, hi = item["interval"]
    assert lo <= item["estimate"] <= hi
    assert item["verdict"] == ("better" if lo > 0 else "worse" if hi < 0 else "no difference")
    assert item["arms"] == {"a": "reference@1", "b": "model@1"}
  assert doc["protocol"]["reference"] == runs["barely"]
  assert any("ood_site_b" in line and "difference" in line for line in lines)


def test_a_model_against_itself_is_no_difference(runs, tmp_path):
  doc = compare_models.compare_models(runs["trained"], runs["trained"], runs["sets"],
                                      str(tmp_path / "self"), num_bootstrap=50,
                                      log=lambda _: None)
  for item in doc["findings"]:
    assert item["name"].startswith("ood_") or item["name"] == "id_test"
    assert item["estimate"] == 0.0 and item["interval"] == [0.0, 0.0]
    assert item["verdict"] == "no difference"


def test_bad_requests_name_the_problem(runs, tmp_path):
  with pytest.raises(ConfigError, match=r"\['nope'\] are not evaluation sets"):
    compare_models.compare_models(runs["trained"], runs["barely"], runs["sets"],
                                  str(tmp_path / "x"), id_sets=("nope",))
  with pytest.raises(ConfigError, match="num_bootstrap=0"):
    compare_models.compare_models(runs["trained"], runs["barely"], runs["sets"],
                                  str(tmp_path / "x"), num_bootstrap=0)
  assert not os.path.exists(tmp_path / "x")


def test_a_label_without_negatives_is_left_out_and_named(runs, tmp_path):
  # "Noise" labels all 1 in this set: its AUC is undefined, so the mean runs over "Bright".
  base = runs["sets"]["id_test"]
  records = [dataclasses.replace(r, labels=(r.labels[0], 1.0)) for r in base.records]
  one_sided = dataclasses.replace(base, records=type(base.records)(records))
  doc = compare_models.compare_models(runs["trained"], runs["barely"], {"id_test": one_sided},
                                      str(tmp_path / "one"), num_bootstrap=50,
                                      log=lambda _: None)
  item = doc["findings"][0]
  assert item["labels_left_out"] == ["Noise"]
  bright = [skm.roc_auc_score(
      p.labels[:, 0], p.scores[:, 0]) for p in (classifier.load_model(runs[k]).predict(one_sided)
                                                for k in ("trained", "barely"))]
  assert item["estimate"] == pytest.approx(bright[0] - bright[1], abs=1e-9)
