"""Which config fields a resumed run may change: each config declares its own
(``RESUMABLE_FIELDS``) and ``loop.check_run_config`` reads them per section."""

import dataclasses

import pytest

from remedis_tf import configs
from remedis_tf.errors import ConfigError
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.train import loop as loop_lib
from remedis_tf.train.contrastive import ContrastiveConfig
from remedis_tf.train.supervised import SupervisedConfig

DECLARING = (loop_lib.LoopConfig, ContrastiveConfig, SupervisedConfig, OptimizerConfig)


def _run_config(run_dir, **sections):
  base = {"stage": "test", "loop": loop_lib.LoopConfig(run_dir=str(run_dir), total_steps=4),
          "contrastive": ContrastiveConfig(variant="tiny", global_batch_size=8)}
  base.update(sections)
  return base


def _change(run_config, section, **fields):
  return {**run_config, section: dataclasses.replace(run_config[section], **fields)}


@pytest.mark.parametrize("section, declared, undeclared", [
    ("loop", {"total_steps": 8, "log_every": 7}, {"handle_sigterm": False}),
    ("contrastive", {"init": "/elsewhere/run"}, {"temperature": 0.2}),
])
def test_declared_fields_may_change_on_resume_undeclared_may_not(tmp_path, section, declared,
                                                                 undeclared):
  recorded = _run_config(tmp_path)
  configs.write_run_config(str(tmp_path), **recorded)
  assert set(declared) <= set(type(recorded[section]).RESUMABLE_FIELDS)
  assert not set(undeclared) & set(type(recorded[section]).RESUMABLE_FIELDS)
  loop_lib.check_run_config(str(tmp_path), _change(recorded, section, **declared))
  (name, value), = undeclared.items()
  with pytest.raises(ConfigError, match=rf"{section}\.{name}: run dir has .*, now {value}"):
    loop_lib.check_run_config(str(tmp_path), _change(recorded, section, **declared,
                                                     **undeclared))


def test_a_field_is_resumable_only_in_the_section_whose_config_declares_it(tmp_path):
  recorded = _run_config(tmp_path, data={"source": "a.csv", "init": "x"})
  configs.write_run_config(str(tmp_path), **recorded)
  with pytest.raises(ConfigError, match=r"data\.init: run dir has 'x', now 'y'"):
    loop_lib.check_run_config(str(tmp_path), {**recorded,
                                              "data": {"source": "a.csv", "init": "y"}})


def test_resumable_paths_are_dotted_per_section():
  paths = loop_lib.resumable_paths({
      "stage": "finetune", "loop": loop_lib.LoopConfig(run_dir="r", total_steps=1),
      "supervised": SupervisedConfig(), "optimizer": OptimizerConfig(),
      "data": {"source": "a.csv"}})
  assert {"loop.total_steps", "loop.run_dir", "supervised.init",
          "optimizer.total_steps"} <= paths
  assert "optimizer.base_lr" not in paths and not [p for p in paths if p.startswith("data.")]
  # The loop's own section may also come as a plain dict (as tests pass it).
  assert loop_lib.resumable_paths({"loop": {"total_steps": 2}}) == {
      f"loop.{name}" for name in loop_lib.LoopConfig.RESUMABLE_FIELDS}


@pytest.mark.parametrize("config_type", DECLARING, ids=lambda t: t.__name__)
def test_every_declared_resumable_field_is_a_field(config_type):
  names = {f.name for f in dataclasses.fields(config_type)}
  assert config_type.RESUMABLE_FIELDS
  assert set(config_type.RESUMABLE_FIELDS) <= names
  assert "RESUMABLE_FIELDS" not in names  # a class attribute, not a config field
