"""The public API (``import remedis_tf as rt``) and its documented script (import order and
circles: tests/test_layering.py)."""

import importlib
import os
import pathlib
import re
import sys

import remedis_tf as rt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "eval"))
from tiny_data import brightness_set  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Where each public name lives (written out here, not derived from rt itself).
HOMES = {
    "ResNetV2": "models.resnet_v2", "load_backbone": "weights.savedmodel",
    "load_bit_npz": "weights.bit_npz", "Manifest": "data.manifest",
    "chexpert": "data.recipes", "mimic_cxr": "data.recipes", "generic_csv": "data.recipes",
    "folder_manifest": "data.folders", "tfrecords_manifest": "data.tfrecords",
    "contrastive_dataset": "data.pipeline", "supervised_dataset": "data.pipeline",
    "eval_dataset": "data.pipeline", "AugmentConfig": "data.augment",
    "get_preset": "data.augment", "ContrastiveConfig": "train.contrastive",
    "SupervisedConfig": "train.supervised", "OptimizerConfig": "optim.factory",
    "LoopConfig": "train.loop", "RuntimeConfig": "runs.stages",
    "run_supervised": "runs.stages", "run_contrastive": "runs.stages",
    "plan_finetune": "train.finetune_plan",
    "evaluate_model": "runs.evaluate", "run_data_efficiency": "runs.sweep",
    "export_savedmodel": "weights.savedmodel",
    "export_classifier_savedmodel": "runs.classifier",
    "from_preset": "weights.preset", "save_to_preset": "weights.preset",
}


def test_all_names_are_the_objects_of_their_modules():
  assert sorted(rt.__all__) == sorted(HOMES)
  assert len(set(rt.__all__)) == len(rt.__all__)
  for name in rt.__all__:
    module = importlib.import_module(f"remedis_tf.{HOMES[name]}")
    assert getattr(rt, name) is getattr(module, name), name
  namespace = {}
  exec("from remedis_tf import *", namespace)  # pylint: disable=exec-used
  assert set(rt.__all__) <= set(namespace)


def _doc_script() -> str:
  text = (ROOT / "docs" / "architecture.md").read_text()
  section = text.split("## The public API in one script", 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_architecture_doc_script_runs_the_three_stages(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  brightness_set("data", "train", num_patients=12)
  brightness_set("data", "valid", num_patients=6, seed=1)
  namespace = {}
  exec(compile(_doc_script(), "docs/architecture.md", "exec"), namespace)  # pylint: disable=exec-used
  for stage in ("stage1", "stage2", "stage3"):
    assert (tmp_path / "runs" / stage / "config.json").exists(), stage
  assert (tmp_path / "runs" / "stage3" / "best" / "best.json").exists()
  assert namespace["plan"].boundaries == (1, 2, 3, 4, 5)  # the HyperRule shape, scaled
  valid = namespace["result"]["sets"]["valid"]
  assert valid["metric"] == "mean_auc" and valid["num_examples"] == 12
  assert 0.0 <= valid["lower"] <= valid["value"] <= valid["upper"] <= 1.0
  assert (tmp_path / "eval" / "valid.json").exists()
