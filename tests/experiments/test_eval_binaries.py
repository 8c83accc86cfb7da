"""evaluate / embed / data_efficiency binaries as subprocesses, and every flagfile parses."""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import stages
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig
from tests.eval.tiny_data import brightness_set

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "experiments", "configs")
SIZE = 32


def _env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _run(module, *args):
  proc = subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=REPO,
                        env=_env(), capture_output=True, text=True, timeout=240)
  return proc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("binaries"))
  train, train_csv = brightness_set(root, "train", 8, seed=0)
  _, test_csv = brightness_set(root, "test", 6, seed=1)
  _, ood_csv = brightness_set(root, "ood", 6, seed=2, shift=0.1)
  _, probe_csv = brightness_set(root, "probe", 8, seed=3, patient_prefix="q")
  run_dir = os.path.join(root, "run")
  opt = OptimizerConfig(name="sgd", base_lr=0.05, lr_scaling="none", schedule="constant",
                        total_steps=4, weight_decay=0.0)
  stages.run_supervised(train, SupervisedConfig(variant="tiny", global_batch_size=8), opt, None,
                        SIZE, LoopConfig(run_dir, 4, steps_per_loop=4), log=lambda _: None)
  return {"root": root, "run_dir": run_dir, "train_csv": train_csv, "test_csv": test_csv,
          "ood_csv": ood_csv, "probe_csv": probe_csv}


def test_evaluate_binary(tiny):
  out = os.path.join(tiny["root"], "eval")
  proc = _run("evaluate", f"--model={tiny['run_dir']}", "--eval_source=csv",
              "--eval_patient_column=Patient", f"--eval_set=id_test={tiny['test_csv']}",
              f"--eval_set=ood_site_b=chexpert:{tiny['ood_csv']}", "--val_set=id_test",
              "--num_bootstrap=30", f"--output_dir={out}", "--subgroup=Patient",
              "--subgroup=view", "--subgroup_min_patients=2", "--calibration_bins=5",
              f"--export_savedmodel={os.path.join(tiny['root'], 'clf')}",
              f"--export_preset={os.path.join(tiny['root'], 'clf_preset')}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert set(summary["sets"]) == {"id_test", "ood_site_b"}
  assert summary["sets"]["id_test"]["num_patients"] == 6
  assert summary["operating_point"]["chosen_on"] == "id_test"
  assert "id_test: mean_auc" in proc.stdout
  assert os.path.exists(os.path.join(tiny["root"], "clf", "remedis_classifier.json"))
  # Subgroups: one per patient (each below --subgroup_min_patients, so flagged) and view.
  reports = json.load(open(os.path.join(out, "ood_site_b_subgroups.json")))
  assert [r["column"] for r in reports] == ["Patient", "view"]
  assert len(reports[0]["groups"]) == 6
  assert all(not g["interval"] and "fewer than 2" in g["flags"][0]
             for g in reports[0]["groups"].values())
  cal = json.load(open(os.path.join(out, "id_test_calibration.json")))
  assert cal["num_bins"] == 5 and cal["source"].startswith("fitted on id_test")
  assert os.path.exists(os.path.join(out, "id_test_reliability.png"))
  # The exported preset is itself a --model: same metric as the run directory.
  out_p = os.path.join(tiny["root"], "eval_preset")
  proc = _run("evaluate", f"--model={os.path.join(tiny['root'], 'clf_preset')}",
              "--eval_source=csv", "--eval_patient_column=Patient",
              f"--eval_set=id_test={tiny['test_csv']}", "--num_bootstrap=30",
              f"--output_dir={out_p}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  from_preset = json.load(open(os.path.join(out_p, "summary.json")))
  assert from_preset["model_kind"] == "preset"
  assert from_preset["sets"]["id_test"]["value"] == summary["sets"]["id_test"]["value"]
  # Its model card lists the metrics --export_preset's evaluation measured, with intervals.
  card = open(os.path.join(tiny["root"], "clf_preset", "README.md")).read()
  row = summary["sets"]["id_test"]
  assert (f"| id_test | mean_auc | {row['value']:.4f} | [{row['lower']:.4f}, "
          f"{row['upper']:.4f}] |") in card
  # User errors: one line on stderr, exit status 2.
  proc = _run("evaluate", f"--model={tiny['run_dir']}", "--eval_set=broken",
              f"--output_dir={out}")
  assert proc.returncode == 2 and "error: --eval_set='broken'" in proc.stderr


def test_embed_binary(tiny):
  out = os.path.join(tiny["root"], "emb.npz")
  proc = _run("embed", f"--model={tiny['run_dir']}", "--source=csv",
              f"--csv={tiny['test_csv']}", "--label_columns=Bright",
              "--patient_column=Patient", f"--output={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(out, allow_pickle=False) as arrays:
    assert arrays["embeddings"].shape[0] == 12 and arrays["embeddings"].dtype == np.float32
    assert list(arrays["label_names"]) == ["Bright"]


def test_frozen_eval_binary(tiny):
  out = os.path.join(tiny["root"], "frozen.json")
  data = ["--train_source=csv", f"--train_csv={tiny['probe_csv']}", "--train_label_columns=Bright",
          "--train_patient_column=Patient", "--test_source=csv",
          f"--test_csv={tiny['test_csv']}", "--test_label_columns=Bright",
          "--test_patient_column=Patient"]
  proc = _run("frozen_eval", f"--model=a={tiny['run_dir']}", f"--model=b={tiny['run_dir']}",
              *data, "--num_bootstrap=20", "--knn_k=3", f"--output={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.load(open(out))
  assert result["n_train"] == 16 and result["n_test"] == 12 and result["metric"] == "mean_auc"
  # Same model twice: identical results and a paired difference of exactly 0.
  assert result["models"]["a"] == result["models"]["b"]
  assert result["differences"]["b"]["linear_probe"]["value"] == 0.0
  proc = _run("frozen_eval", f"--model={tiny['run_dir']}", *data, f"--output={out}")
  assert proc.returncode == 2 and "NAME=SOURCE" in proc.stderr


def test_data_efficiency_binary(tiny):
  out = os.path.join(tiny["root"], "de")
  args = [f"--train_source=csv", f"--train_csv={tiny['train_csv']}",
          "--train_label_columns=Bright", "--train_patient_column=Patient",
          "--test_source=csv", f"--test_csv={tiny['test_csv']}", "--test_label_columns=Bright",
          "--test_patient_column=Patient", "--models=baseline=,remedis=",
          "--fractions=1.0", "--seeds=0", "--variant=tiny", f"--image_size={SIZE}",
          "--batch_size=8", "--train_steps=2", "--steps_per_loop=2", "--lr_schedule=constant",
          "--learning_rate=0.05", "--lr_scaling=none", "--num_bootstrap=20",
          f"--output_dir={out}"]
  proc = _run("data_efficiency", *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "2 cell(s) computed" in proc.stdout and "[headline]" in proc.stdout
  for name in ("results.json", "table.csv", "table.md", "headline.json",
               "data_efficiency.png"):
    assert os.path.exists(os.path.join(out, name)), name


_PARSER = r"""
import importlib, sys
binary, extra, files = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
importlib.import_module("experiments." + binary)
from absl import flags
from absl.flags import FLAGS
for path in files:
  FLAGS.unparse_flags()
  if path.startswith("bad:"):
    try:
      FLAGS(["prog", "--flagfile=" + path[4:]] + extra)
    except flags.Error as e:
      print("rejected", path, e)
    continue
  FLAGS(["prog", "--flagfile=" + path] + extra)
  if "aug_preset" in FLAGS:
    from experiments import common_flags
    common_flags.augment_from_flags(FLAGS.image_size or 224)
  print("parsed", path)
"""
_EXTRA = {"finetune": "--run_dir=x", "pretrain_contrastive": "--run_dir=x",
          "data_efficiency": "--output_dir=x", "make_tfrecords": ""}


def _flagfiles():
  by_binary = {}
  for path in sorted(glob.glob(os.path.join(CONFIGS, "*.flags"))):
    first = open(path).readline()
    m = re.match(r"# binary: (\w+)$", first.strip())
    assert m, f"{path} must start with '# binary: <module>'"
    by_binary.setdefault(m.group(1), []).append(path)
  return by_binary


def test_every_flagfile_parses_with_its_binary(tmp_path):
  by_binary = _flagfiles()
  assert set(by_binary) <= set(_EXTRA), sorted(by_binary)
  tasks = ("cxr_chexpert", "cxr_mimic", "derm", "fundus_dme", "pathology_pcam", "mammo")
  names = {os.path.basename(p) for ps in by_binary.values() for p in ps}
  for task in tasks:
    for stage in ("stage2", "stage3"):
      assert f"{task}_{stage}.flags" in names
  # A flag that does not exist must make the parse fail (so the check means something).
  bogus = tmp_path / "bogus.flags"
  bogus.write_text("# binary: finetune\n--no_such_flag=1\n")
  procs = {}
  for binary, files in by_binary.items():
    args = files + ([f"bad:{bogus}"] if binary == "finetune" else [])
    procs[binary] = subprocess.Popen([sys.executable, "-c", _PARSER, binary, _EXTRA[binary],
                                      *args], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
  stdout_of = {}
  for binary, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=240)
    stdout_of[binary] = stdout
    assert proc.returncode == 0, f"{binary}: {stderr[-2000:]}"
    assert stdout.count("parsed") == len(by_binary[binary])
  assert "rejected" in stdout_of["finetune"] and "no_such_flag" in stdout_of["finetune"]


def test_assumptions_are_marked():
  for paths in _flagfiles().values():
    for path in paths:
      text = open(path).read()
      assert "assumption:" in text or "make_tfrecords" in path, path
      for line in text.splitlines():
        # absl has no inline comments: a flag line must be only the flag.
        if line.startswith("--"):
          assert "#" not in line, (path, line)
