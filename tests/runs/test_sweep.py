"""The data-efficiency sweep end to end on tiny data, resumability, and per-cell plans."""

import csv
import json
import math
import os

import pytest
import tensorflow as tf

from remedis_tf.errors import ConfigError
from remedis_tf.eval import data_efficiency as de
from remedis_tf.eval import resampling
from remedis_tf.eval.result_store import ResultStore
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import sweep
from remedis_tf.train.supervised import SupervisedConfig
from tests.eval.tiny_data import brightness_set

# Tolerances here (docs/testing.md):
# derived: the same float64 interpolation of the same stored numbers, read back from JSON
# (exact) (approx defaults, rel 1e-6 >> 1e-16).

SIZE = 32


def _template(steps=3, **kwargs):
  opt = OptimizerConfig(name="sgd", base_lr=0.05, lr_scaling="none", schedule="constant",
                        total_steps=steps, weight_decay=0.0)
  return sweep.FinetuneTemplate(SupervisedConfig(variant="tiny", global_batch_size=16), opt,
                                None, SIZE, steps_per_loop=steps, **kwargs)


def test_sweep_end_to_end_and_resume(tmp_path):
  root = str(tmp_path)
  train, _ = brightness_set(root, "train", 12, seed=0)
  test, _ = brightness_set(root, "test", 6, seed=1)
  from remedis_tf.weights import bit_npz
  tf.keras.utils.set_random_seed(2)
  init = bit_npz.save_bit_npz(ResNetV2("tiny").build_for(SIZE), os.path.join(root, "i.npz"),
                              include_head=False)
  models = {"baseline": "", "remedis": init}
  out = os.path.join(root, "sweep")
  lines = []
  result = sweep.run_data_efficiency(train, test, models, [0.25, 1.0], [0], _template(), out,
                                     num_bootstrap=20, log=lines.append)
  assert len(result.computed) == 4 and not result.skipped and not result.interrupted
  results = json.load(open(os.path.join(out, sweep.RESULTS_FILE)))
  cells = {(c["model"], c["fraction"]): c["result"] for c in results["cells"]}
  assert set(cells) == {(m, f) for m in models for f in (0.25, 1.0)}
  # Patient-level stratified subset: 2 strata of 6 patients → ceil(0.25·6) = 2 patients
  # each, 2 images per patient.
  assert cells[("baseline", 0.25)]["n_train"] == 8
  assert cells[("baseline", 1.0)]["n_train"] == len(train)
  assert cells[("baseline", 0.25)]["global_batch_size"] == 8  # min(16, subset size)
  assert cells[("remedis", 1.0)]["init"] == init
  for cell in results["cells"]:
    ci = cell["result"]["metric"]
    assert cell["result"]["metric_name"] == "mean_auc"
    assert os.path.exists(os.path.join(cell["result"]["run_dir"], "test_metrics.json"))
    if ci["lower"] is not None:
      assert ci["lower"] <= ci["value"] <= ci["upper"]
  assert any("init" in l and "npz" in l for l in lines)  # remedis cells loaded the npz

  # The headline is the one its own table gives.
  with open(os.path.join(out, "table.csv")) as f:
    table = [{"model": r["model"], "fraction": float(r["fraction"]), "mean": float(r["mean"]),
              "std": float("nan"), "lower": float("nan"), "upper": float("nan"),
              "num_seeds": int(r["num_seeds"])} for r in csv.DictReader(f)]
  assert len(table) == 4
  expected = de.headline_fraction(table, "baseline", "remedis")
  headline = json.load(open(os.path.join(out, "headline.json")))
  assert headline["reached"] == expected.reached
  assert headline["reference_value"] == pytest.approx(expected.reference_value)
  if expected.reached:
    assert headline["interpolated_fraction"] == pytest.approx(expected.interpolated_fraction)
  # Intervals and bands: the seed × test-patient bootstrap of the saved cell predictions.
  assert headline["interval"]["num_samples"] == 20, headline.get("interval_note")
  reps, why = sweep.combined_from_store(ResultStore(os.path.join(out, sweep.RESULTS_FILE)),
                                        "mean_auc", 20, 0)
  assert reps is not None, why
  want = resampling.combined_rows(reps)
  assert [(r.model, r.fraction, r.lower, r.upper) for r in want] == [
      (r.model, r.fraction, r.lower, r.upper) for r in result.table]
  assert [r.per_seed for r in result.combined] == [r.per_seed for r in want]
  assert "baseline" in open(os.path.join(out, "table.md")).read()
  # findings.json: the paired efficiency findings and the reference model's curve.
  found = json.load(open(os.path.join(out, "findings.json")))
  assert found["protocol"]["selection"] == "final weights"
  assert [f["name"] for f in found["findings"]] == [
      "efficiency_new_site_finetune_f0.25", "efficiency_new_site_finetune_f1",
      "efficiency_new_site_finetune_headline"]
  curve = found["baseline_learning_curve"]
  assert (curve["from_fraction"], curve["to_fraction"]) == (0.25, 1.0)
  assert curve["rise"] == pytest.approx(reps.point_mean("baseline", 1.0)
                                        - reps.point_mean("baseline", 0.25))
  png = open(result.files["plot"], "rb").read()
  assert png[:8] == b"\x89PNG\r\n\x1a\n"

  # Rerun: nothing is recomputed and no run directory is touched.
  ckpts = {c["result"]["run_dir"]: sorted(os.listdir(os.path.join(c["result"]["run_dir"],
                                                                  "checkpoints")))
           for c in results["cells"]}
  mtimes = {d: os.path.getmtime(os.path.join(d, "checkpoints", "checkpoint")) for d in ckpts}
  again = sweep.run_data_efficiency(train, test, models, [0.25, 1.0], [0], _template(), out,
                                    num_bootstrap=20, log=lambda _: None)
  assert not again.computed and len(again.skipped) == 4
  for d in ckpts:
    assert os.path.getmtime(os.path.join(d, "checkpoints", "checkpoint")) == mtimes[d]
  assert json.load(open(os.path.join(out, sweep.RESULTS_FILE)))["cells"] == results["cells"]

  # A different test set (or template) is refused rather than mixed into the same table.
  with pytest.raises(ConfigError, match="test"):
    sweep.run_data_efficiency(train, train, models, [1.0], [0], _template(), out,
                              num_bootstrap=20, log=lambda _: None)
  with pytest.raises(ConfigError, match="template"):
    sweep.run_data_efficiency(train, test, models, [1.0], [0], _template(steps=4), out,
                              num_bootstrap=20, log=lambda _: None)
  with pytest.raises(ConfigError, match="remedis"):
    sweep.run_data_efficiency(train, test, {"remedis": ""}, [1.0], [0], _template(), out,
                              num_bootstrap=20, log=lambda _: None)


def test_plan_cell_rules():
  fixed = sweep.plan_cell(_template(steps=7), "x.npz", 3, num_train=5)
  assert fixed.total_steps == 7 and fixed.supervised.global_batch_size == 5
  assert fixed.supervised.init == "x.npz" and fixed.supervised.seed == 3
  epochs = sweep.plan_cell(_template(steps_rule="epochs", train_epochs=2.5), "", 0, 40)
  assert epochs.total_steps == math.ceil(2.5 * 40 / 16)
  cosine = OptimizerConfig(name="sgd", base_lr=0.1, lr_scaling="none",
                           schedule="warmup_cosine", total_steps=10, weight_decay=0.0)
  template = sweep.FinetuneTemplate(SupervisedConfig(variant="tiny", global_batch_size=8),
                                    cosine, None, SIZE, steps_rule="epochs", train_epochs=1,
                                    warmup_epochs=0.5)
  plan = sweep.plan_cell(template, "", 0, 64)
  assert (plan.total_steps, plan.optimizer.warmup_steps) == (8, 4)
  hyper = OptimizerConfig(name="sgd", base_lr=0.003, schedule="bit_hyperrule", total_steps=10,
                          weight_decay=0.0)
  template = sweep.FinetuneTemplate(SupervisedConfig(variant="tiny", global_batch_size=512),
                                    hyper, None, SIZE, steps_rule="hyperrule",
                                    hyperrule_step_scale=0.1, hyperrule_mixup=True)
  small = sweep.plan_cell(template, "", 0, 1000)
  assert small.optimizer.boundaries == (10, 20, 30, 40, 50)
  assert small.total_steps == 50 and small.supervised.mixup_alpha == 0.0
  large = sweep.plan_cell(template, "", 0, 30000)
  assert large.total_steps == 1000 and large.supervised.mixup_alpha == 0.1
  assert large.supervised.global_batch_size == 512


def test_template_and_grid_validation(tmp_path):
  with pytest.raises(ConfigError, match="steps_rule"):
    _template(steps_rule="forever")
  with pytest.raises(ConfigError, match="bit_hyperrule"):
    _template(steps_rule="hyperrule")
  train, _ = brightness_set(str(tmp_path), "t", 4)
  for fractions, seeds, models, match in (([0.0], [0], {"b": ""}, "fraction"),
                                          ([0.5], [], {"b": ""}, "seeds"),
                                          ([0.5], [0], {}, "models"),
                                          ([0.5], [0], {"a/b": ""}, "model name")):
    with pytest.raises(ConfigError, match=match):
      sweep.run_data_efficiency(train, train, models, fractions, seeds, _template(),
                                str(tmp_path / "o"), log=lambda _: None)


def test_sweep_selects_lr_and_checkpoint_on_validation(tmp_path):
  from remedis_tf.data.label_fraction import holdout_split
  root = str(tmp_path)
  pool, _ = brightness_set(root, "train", 16, seed=0)
  test, _ = brightness_set(root, "test", 6, seed=1)
  train, val = holdout_split(pool, 0.25, seed=0)
  assert not set(train.patients()) & set(val.patients())
  out = os.path.join(root, "sweep")
  result = sweep.run_data_efficiency(
      train, test, {"baseline": "", "remedis": ""}, [0.5, 1.0], [0, 1],
      _template(steps=4, steps_rule="epochs", train_epochs=1, min_steps=2, max_steps=4),
      out, num_bootstrap=20, log=lambda _: None, validation=val, lr_grid=(0.01, 0.05),
      lr_seed_sharing=True)
  assert len(result.computed) == 8
  cells = {(c["model"], c["fraction"], c["seed"]): c["result"]
           for c in json.load(open(os.path.join(out, sweep.RESULTS_FILE)))["cells"]}
  for (model, fraction, seed), r in cells.items():
    assert r["selection"] == "validation" and r["lr_grid"] == [0.01, 0.05]
    assert r["lr"] in (0.01, 0.05) and 2 <= r["total_steps"] <= 4
    first = cells[(model, fraction, 0)]
    if seed:  # the lr chosen on seed 0, reused; only that lr trained
      assert r["lr"] == first["lr"] and r["lr_chosen_on_seed"] == 0
      assert list(r["val_grid"]) == [f"{first['lr']:g}"]
    else:
      assert set(r["val_grid"]) == {"0.01", "0.05"}
      assert r["val_value"] == max(r["val_grid"].values())
    sel = json.load(open(os.path.join(r["run_dir"], "selection.json")))
    assert os.path.isdir(os.path.join(sel["run_dir"], "best"))
  found = json.load(open(os.path.join(out, "findings.json")))
  assert found["protocol"]["selection"] == "validation"
  assert found["protocol"]["lr_grid"] == [0.01, 0.05]


def test_probe_arm_chooses_c_on_validation(tmp_path):
  from remedis_tf.data.label_fraction import holdout_split
  from remedis_tf.runs import sweep_probe
  from remedis_tf.weights import bit_npz
  root = str(tmp_path)
  pool, _ = brightness_set(root, "train", 16, seed=0)
  test, _ = brightness_set(root, "test", 6, seed=1)
  train, val = holdout_split(pool, 0.25, seed=0)
  tf.keras.utils.set_random_seed(2)
  init = bit_npz.save_bit_npz(ResNetV2("tiny").build_for(SIZE), os.path.join(root, "i.npz"),
                              include_head=False)
  probe = sweep_probe.probe_sweep({"baseline": init, "remedis": init}, train, val, test,
                                  [0.5, 1.0], [0, 1], SIZE, os.path.join(root, "probe"),
                                  c_grid=(0.1, 1.0), num_bootstrap=20, log=lambda _: None)
  assert sorted(probe["replicates"].cells()) == [(m, f) for m in ("baseline", "remedis")
                                                  for f in (0.5, 1.0)]
  for info in probe["cells"].values():
    assert info["c"] in (0.1, 1.0) and info["val_value"] == max(info["val_grid"].values())
  # The same features for both models: every paired difference is exactly 0.
  reps = probe["replicates"]
  for f in (0.5, 1.0):
    assert reps.point_mean("baseline", f) == reps.point_mean("remedis", f)
  assert os.path.exists(os.path.join(root, "probe", sweep_probe.PROBE_FILE))
