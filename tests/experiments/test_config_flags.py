"""Flags generated from config fields (experiments/config_flags.py): a bad flag value's
validation error names the flag, not the config field it sets."""

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import flags

from experiments import common_flags
from experiments.config_flags import ConfigFlags, Flag
from remedis_tf.errors import ConfigError
from remedis_tf.eval.frozen import FrozenEvalConfig
from remedis_tf.train.contrastive import ContrastiveConfig
from tests.eval.tiny_data import brightness_set

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parsed(table, *argv, fields=(), **define):
  values = flags.FlagValues()
  table.define(*fields, flag_values=values, **define)
  values(["prog", *argv])
  return values


def test_optimizer_errors_name_the_flags():
  values = _parsed(common_flags.OPTIMIZER, "--learning_rate=0", "--optimizer=lars",
                   "--nesterov")
  with pytest.raises(ConfigError, match=r"^--learning_rate=0\.0: must be > 0$"):
    common_flags.OPTIMIZER.build(values, total_steps=10)
  values["learning_rate"].value = 0.1
  with pytest.raises(ConfigError, match=r"^--nesterov=True: only supported by sgd, not lars$"):
    common_flags.OPTIMIZER.build(values, total_steps=10)
  values["nesterov"].value = False
  values["momentum"].value = 1.0
  with pytest.raises(ConfigError, match=r"^--momentum=1\.0: must be in \[0, 1\)$"):
    common_flags.OPTIMIZER.build(values, total_steps=10)


def test_loop_and_supervised_errors_name_the_flags():
  loop = _parsed(common_flags.LOOP, "--run_dir=/tmp/x", "--steps_per_loop=0",
                 fields=("run_dir", "steps_per_loop"), required=("run_dir",))
  with pytest.raises(ConfigError, match=r"^--steps_per_loop must be >= 1, got 0$"):
    common_flags.LOOP.build(loop, total_steps=5)
  # Computed values keep their field names; so does a field set through another flag.
  with pytest.raises(ConfigError, match=r"^--monitor_every must be >= 0, got -1$"):
    common_flags.LOOP.renamed(eval_every="monitor_every").build(
        loop, total_steps=5, steps_per_loop=1, eval_every=-1)
  supervised = _parsed(common_flags.SUPERVISED, "--batch_size=0", "--variant=tiny",
                       fields=("variant", "global_batch_size", "from_projection_layer"))
  with pytest.raises(ConfigError, match=r"^--batch_size must be >= 1, got 0$"):
    common_flags.SUPERVISED.build(supervised)
  supervised["batch_size"].value = 4
  supervised["from_projection_layer"].value = 3
  with pytest.raises(ConfigError, match=r"^--from_projection_layer must be in 0\.\.2, got 3$"):
    common_flags.SUPERVISED.build(supervised)


def test_generated_flags_take_type_default_and_help_from_the_field():
  table = ConfigFlags(FrozenEvalConfig, {"knn_k": Flag(), "probe_c": Flag("c", help="{doc} More."),
                                         "seed": Flag()})
  values = _parsed(table, "--c=2.5", defaults={"seed": 7})
  assert (values["knn_k"].value, values["c"].value, values["seed"].value) == (20, 2.5, 7)
  assert values["knn_k"].help == "neighbours per test image."
  assert values["c"].help.startswith("inverse L2 strength") and values["c"].help.endswith(
      " More.")
  config = table.build(values, batch_size=3)
  assert config == dataclasses.replace(FrozenEvalConfig(), probe_c=2.5, seed=7, batch_size=3)
  with pytest.raises(ConfigError, match=r"^--c must be > 0, got -1\.0$"):
    values["c"].value = -1.0
    table.build(values)


def test_plain_words_stay_prose():
  table = ConfigFlags(ContrastiveConfig, {"variant": Flag("backbone"), "temperature": Flag(),
                                          "global_batch_size": Flag("batch_size")})
  assert table.flag_message("temperature must be > 0, got 0") == "--temperature must be > 0, got 0"
  assert table.flag_message("the variant of ContrastiveConfig.variant, global_batch_size=1") == (
      "the variant of --backbone, --batch_size=1")
  assert dict(table.items()) == {"variant": "backbone", "temperature": "temperature",
                                 "global_batch_size": "batch_size"}
  with pytest.raises(ValueError, match="no field"):
    ConfigFlags(ContrastiveConfig, {"learning_rate": Flag()})


def test_binary_reports_the_flag_of_a_bad_config_value(tmp_path):
  _, csv = brightness_set(str(tmp_path), "train", num_patients=4)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO)
  run_dir = os.path.join(tmp_path, "run")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.finetune", "--train_source=csv",
       f"--train_csv={csv}", "--train_label_columns=Bright", "--variant=tiny",
       "--image_size=32", "--train_steps=2", "--batch_size=4", "--lr_schedule=constant",
       "--learning_rate=0", f"--run_dir={run_dir}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == "error: --learning_rate=0.0: must be > 0"
  assert not os.path.exists(run_dir)
