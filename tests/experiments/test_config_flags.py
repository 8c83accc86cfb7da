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
from remedis_tf.data import augment as augment_lib
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


def test_errors_are_mapped_by_their_field_not_their_text():
  table = ConfigFlags(ContrastiveConfig, {"variant": Flag("backbone"), "temperature": Flag(),
                                          "global_batch_size": Flag("batch_size")})
  assert dict(table.items()) == {"variant": "backbone", "temperature": "temperature",
                                 "global_batch_size": "batch_size"}

  def reraised(error):
    with pytest.raises(ConfigError) as info:
      with table.flag_errors():
        raise error
    return info.value

  # The field's flag replaces its name; the field and the reason are kept, the library's
  # error is the cause. Field names in the prose stay as written.
  e = reraised(ConfigError("must be >= 2 (a variant's global_batch_size), got 1",
                           field="global_batch_size"))
  assert str(e) == "--batch_size must be >= 2 (a variant's global_batch_size), got 1"
  assert (e.field, e.reason) == ("global_batch_size", "must be >= 2 (a variant's "
                                                      "global_batch_size), got 1")
  assert str(e.__cause__) == "global_batch_size must be >= 2 (a variant's global_batch_size), got 1"
  e = reraised(ConfigError("not with temperature", field="variant", value="tiny",
                           config="ContrastiveConfig"))
  assert str(e) == "--backbone='tiny': not with temperature"
  # No field, a field this table does not map, or another class' field: left as it is,
  # even when the text starts with a field's name.
  for error in (ConfigError("temperature must be > 0, got 0"),
                ConfigError("must be >= 1, got 0", field="seed"),
                ConfigError("must be > 0", field="temperature", value=0,
                            config="OptimizerConfig")):
    assert reraised(error) is error
  with pytest.raises(ValueError, match="no field"):
    ConfigFlags(ContrastiveConfig, {"learning_rate": Flag()})


def test_a_reason_naming_another_field_names_its_flag_too():
  # The reason marks the other field ({crop_area_max}) and lists it in ``related``: the
  # library prints field names, a binary the flags of both (no text is searched).
  with pytest.raises(ConfigError) as info:
    augment_lib.AugmentConfig(crop_area_min=0.5, crop_area_max=0.3)
  e = info.value
  assert str(e) == ("AugmentConfig.crop_area_min=0.5: need 0 < crop_area_min <= "
                    "crop_area_max (0.3) <= 1")
  assert (e.field, e.related) == ("crop_area_min", ("crop_area_max",))
  with pytest.raises(ConfigError) as info:
    with common_flags.AUGMENT.flag_errors():
      raise e
  assert str(info.value) == ("--aug_crop_area_min=0.5: need 0 < --aug_crop_area_min <= "
                             "--aug_crop_area_max (0.3) <= 1")
  # A reason without related fields is not a template: its braces stay as written.
  assert str(ConfigError("must be one of {'a', 'b'}", field="x")) == "x must be one of {'a', 'b'}"
  with pytest.raises(TypeError):
    ConfigError("need {y}", related=("y",))


def test_config_error_names_its_field():
  e = ConfigError("must be > 0", field="base_lr", value=0.0, config="OptimizerConfig")
  assert (str(e), e.field, e.reason, e.config) == (
      "OptimizerConfig.base_lr=0.0: must be > 0", "base_lr", "must be > 0", "OptimizerConfig")
  assert str(e.renamed("--learning_rate")) == "--learning_rate=0.0: must be > 0"
  assert str(e) == "OptimizerConfig.base_lr=0.0: must be > 0"  # renamed() copies
  # (That a ConfigError keeps its field on its way back from a worker process is tested in
  # tests/runs/test_parallel.py.)
  assert str(ConfigError("must be >= 1, got 0", field="knn_k")) == "knn_k must be >= 1, got 0"
  plain = ConfigError("knn_k must be >= 1, got 0")
  assert (str(plain), plain.field, plain.reason) == ("knn_k must be >= 1, got 0", None,
                                                     "knn_k must be >= 1, got 0")
  with pytest.raises(ConfigError, match=r"^knn_k must be >= 1, got 0$") as info:
    FrozenEvalConfig(knn_k=0)
  assert info.value.field == "knn_k"


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
