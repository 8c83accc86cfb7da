"""Frozen config dataclasses ↔ JSON.

Each library module owns the dataclass for its own settings (e.g.
``remedis_tf.data.augment.AugmentConfig``); this module serialises any of them and writes
the resolved configuration of a run next to its checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Collection, Dict, List, Mapping, Tuple, Type, TypeVar

import tensorflow as tf

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
  if not tf.io.gfile.exists(path):
    raise ConfigError(f"no {RUN_CONFIG_FILE} in run directory {run_dir}")
  return io_utils.read_json(path)


def resumable_fields(config: Any) -> Tuple[str, ...]:
  """The fields of ``config`` a resumed run may change (its ``RESUMABLE_FIELDS`` class
  attribute; none when it declares nothing). Each config dataclass declares its own."""
  return tuple(getattr(config, "RESUMABLE_FIELDS", ()))


def jsonable(value: Any) -> Any:
  """``value`` as it reads back from JSON: dataclasses become dicts (also inside a dict),
  tuples lists, and anything JSON cannot hold its ``str``."""
  if isinstance(value, Mapping):
    value = {k: (to_dict(v) if dataclasses.is_dataclass(v) else v) for k, v in value.items()}
  elif dataclasses.is_dataclass(value):
    value = to_dict(value)
  return json.loads(json.dumps(value, default=str))


def config_differences(recorded: Mapping[str, Any], current: Mapping[str, Any],
                       ignore: Collection[str] = (), recorded_label: str = "recorded"
                       ) -> List[str]:
  """What differs between a stored config and the current one, one line per key.

  Both are nested dicts as written to JSON (pass ``current`` through ``jsonable``). Nested
  dicts are compared key by key and reported with dotted paths; ``ignore`` holds the dotted
  paths (``"loop.total_steps"``) whose values may differ. Returns ``["loop.seed: recorded 0, now 1", ...]`` (``recorded_label``
  replaces "recorded") sorted by key;
  empty when they match. This one rule serves every "does this directory hold my setup"
  check: resumed runs, sweep directories, the synthetic benchmark.
  """
  return [line for path, line in _differences(recorded, current, recorded_label)
          if not _under(path, ignore)]


def split_differences(recorded: Mapping[str, Any], current: Mapping[str, Any],
                      allowed: Collection[str], recorded_label: str = "recorded"
                      ) -> Tuple[List[str], List[str]]:
  """:func:`config_differences` split into ``(refused, allowed)`` lines: a difference is
  allowed when its dotted path is in (or under) ``allowed``. A resumed run refuses the
  first list and states the second."""
  refused, changed = [], []
  for path, line in _differences(recorded, current, recorded_label):
    (changed if _under(path, allowed) else refused).append(line)
  return refused, changed


def _under(path: str, paths: Collection[str]) -> bool:
  return any(path == p or path.startswith(p + ".") for p in paths)


def _differences(recorded: Any, current: Any, recorded_label: str) -> List[Tuple[str, str]]:
  """``[(dotted path, "path: <label> a, now b")]`` of every differing leaf, sorted by key."""
  diffs: List[Tuple[str, str]] = []

  def walk(a: Any, b: Any, path: str) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      for k in sorted(set(a) | set(b), key=str):
        walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    elif a != b:
      diffs.append((path, f"{path}: {recorded_label} {a!r}, now {b!r}"))

  walk(recorded, current, "")
  return diffs


def format_differences(diffs: List[str], limit: int = 6) -> str:
  """The first ``limit`` lines of :func:`config_differences`, ``; ``-joined (`` ...`` when
  there are more), for one-line errors."""
  return "; ".join(diffs[:limit]) + (" ..." if len(diffs) > limit else "")


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
