"""Frozen config dataclasses ↔ JSON.

Each library module owns the dataclass for its own settings (e.g.
``remedis_tf.data.augment.AugmentConfig``); this module serialises any of them and writes
the resolved configuration of a run next to its checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Type, TypeVar

from remedis_tf import io_utils
from remedis_tf.errors import ConfigError

RUN_CONFIG_FILE = "config.json"
T = TypeVar("T")


def to_dict(config: Any) -> Dict[str, Any]:
  """Dataclass (possibly nested) → plain dict of JSON-friendly values."""
  if not dataclasses.is_dataclass(config):
    raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
  return dataclasses.asdict(config)


def from_dict(cls: Type[T], values: Dict[str, Any]) -> T:
  """Builds dataclass ``cls`` from ``values``; unknown keys raise ConfigError.

  Lists are turned back into tuples where the field default is a tuple, so a config read
  from JSON compares equal to the one written.
  """
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}")
  kwargs = {}
  for name, value in values.items():
    if isinstance(value, list):
      value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    kwargs[name] = value
  return cls(**kwargs)


def write_run_config(run_dir: str, **configs: Any) -> str:
  """Writes ``{name: to_dict(config)}`` to ``run_dir/config.json`` atomically; returns path."""
  path = os.path.join(run_dir, RUN_CONFIG_FILE)
  io_utils.atomic_write_json(path, {k: (to_dict(v) if dataclasses.is_dataclass(v) else v)
                                    for k, v in configs.items()})
  return path


def read_run_config(run_dir: str) -> Dict[str, Any]:
  """Reads ``run_dir/config.json`` (raises ConfigError if absent)."""
  path = os.path.join(run_dir, RUN_CONFIG_FILE)
  import tensorflow as tf
  if not tf.io.gfile.exists(path):
    raise ConfigError(f"no {RUN_CONFIG_FILE} in run directory {run_dir}")
  return io_utils.read_json(path)


def field_docs(cls: type) -> Dict[str, str]:
  """Descriptions of a dataclass' fields, read from the ``Attributes:`` section of its
  docstring (``name: text`` or ``a, b: text`` entries, continuation lines indented).

  Binaries use this so every generated flag's ``--help`` explains the field.
  """
  doc = cls.__doc__ or ""
  if "Attributes:" not in doc:
    return {}
  lines = doc.split("Attributes:", 1)[1].splitlines()
  docs: Dict[str, str] = {}
  current: list = []
  indent = None
  for line in lines:
    if not line.strip():
      continue
    stripped = line.lstrip()
    this_indent = len(line) - len(stripped)
    if indent is None:
      indent = this_indent
    if this_indent < indent:
      break
    head, sep, text = stripped.partition(":")
    if this_indent == indent and sep and all(
        n.strip().isidentifier() for n in head.split(",")):
      current = [n.strip() for n in head.split(",")]
      for n in current:
        docs[n] = text.strip()
    else:
      for n in current:
        docs[n] = (docs[n] + " " + stripped).strip()
  return docs
