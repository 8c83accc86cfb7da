"""Flags generated from a config dataclass' fields, and the same table read backwards.

A :class:`ConfigFlags` declares, for one frozen config class (``OptimizerConfig``,
``LoopConfig``, ...), which fields are command-line flags and under which name
(``base_lr`` is ``--learning_rate``). That one table

* defines the flags (:meth:`ConfigFlags.define`): type from the field's annotation,
  default from the field's default unless the binary gives its own, help text from the
  ``Attributes:`` entry of the class docstring (``configs.field_docs``) unless the table
  gives a better one for the command line;
* builds the config (:meth:`ConfigFlags.build`) from the parsed flags, with the values
  the binary computes (total steps, warmup, ...) passed in by field name;
* translates the library's validation errors into flag names
  (:meth:`ConfigFlags.flag_errors`): a ``ConfigError`` says which field it rejects
  (``e.field``), and the table re-words it with that field's flag, so
  ``OptimizerConfig.base_lr=0.0: must be > 0`` reads ``--learning_rate=0.0: must be > 0``
  under a binary. The message's text is not searched: a field named in its prose stays
  as written.

Flags defined here belong, for ``--helpfull`` and ``--helpshort``, to the module that
called :meth:`ConfigFlags.define` (``disclaim_key_flags`` below), exactly as if that
module had called ``flags.DEFINE_*`` itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

from absl import flags

from remedis_tf.configs import field_docs
from remedis_tf.errors import ConfigError

flags.disclaim_key_flags()

_DEFINE = {"bool": flags.DEFINE_bool, "int": flags.DEFINE_integer,
           "float": flags.DEFINE_float, "str": flags.DEFINE_string}


def define_field_flag(field: dataclasses.Field, name: str, default: Any, help_text: str,
                      flag_values: flags.FlagValues = flags.FLAGS, **extra: Any) -> None:
  """Defines flag ``--name`` of the absl type of ``field``'s annotation (bool, int, float
  or str; KeyError for any other: such a field needs its own flag declaration)."""
  kind = field.type if isinstance(field.type, str) else field.type.__name__
  _DEFINE[kind](name, default, help_text, flag_values=flag_values, **extra)


@dataclasses.dataclass(frozen=True)
class Flag:
  """How one config field appears on the command line.

  Attributes:
    name: flag name without ``--``; empty = the field's name.
    help: help text; empty = the field's docstring entry. ``{doc}`` inside it stands for
      that entry (to add a sentence to it).
    choices: allowed values (an enum flag); empty = any value of the field's type.
  """
  name: str = ""
  help: str = ""
  choices: Tuple[str, ...] = ()


class ConfigFlags:
  """The field → flag table of one config class (see the module docstring)."""

  def __init__(self, config_cls: type, table: Mapping[str, Flag]):
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
      raise ValueError(f"{config_cls.__name__} has no field(s) {unknown}")
    self.config_cls = config_cls
    self._fields = fields
    self._table = dict(table)

  def flag_name(self, field: str) -> str:
    """The flag (without ``--``) that sets ``field``."""
    return self._table[field].name or field

  def renamed(self, **field_to_flag: str) -> "ConfigFlags":
    """The same table with some fields set by other flags (e.g. a binary whose
    ``LoopConfig.eval_every`` is its ``--monitor_every``)."""
    table = dict(self._table)
    for field, name in field_to_flag.items():
      table[field] = dataclasses.replace(table[field], name=name)
    return ConfigFlags(self.config_cls, table)

  def define(self, *fields: str, defaults: Optional[Mapping[str, Any]] = None,
             required: Sequence[str] = (),
             flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Registers the flags of ``fields`` (all fields of the table when none are named).

    ``defaults`` (by field name) replace the dataclass defaults; ``required`` fields'
    flags have no default and must be given.
    """
    defaults = dict(defaults or {})
    docs = field_docs(self.config_cls)
    for field in fields or tuple(self._table):
      spec, info = self._table[field], self._fields[field]
      default = defaults.pop(field, None) if field in defaults else (
          None if field in required else info.default)
      if default is dataclasses.MISSING:
        raise ValueError(f"{self.config_cls.__name__}.{field} has no default; give one")
      help_text = (spec.help or "{doc}").replace("{doc}", docs.get(field, ""))
      name = self.flag_name(field)
      extra = {"required": True} if field in required else {}
      if spec.choices:
        flags.DEFINE_enum(name, default, list(spec.choices), help_text,
                          flag_values=flag_values, **extra)
      else:
        define_field_flag(info, name, default, help_text, flag_values, **extra)
    if defaults:
      raise ValueError(f"defaults for fields not defined here: {sorted(defaults)}")

  def values(self, flag_values: flags.FlagValues = flags.FLAGS) -> Dict[str, Any]:
    """``{field: value}`` of every field of the table whose flag this binary defines."""
    return {field: flag_values[self.flag_name(field)].value for field in self._table
            if self.flag_name(field) in flag_values}

  def build(self, flag_values: flags.FlagValues = flags.FLAGS, **computed: Any) -> Any:
    """The config from the parsed flags, ``computed`` values (by field name) taking
    precedence; a ConfigError from its validation names flags, not fields."""
    with self.flag_errors():
      return self.config_cls(**{**self.values(flag_values), **computed})

  @contextlib.contextmanager
  def flag_errors(self) -> Iterator[None]:
    """A ConfigError raised inside that rejects a field of this table is raised again
    naming the field's flag (``e.renamed``; its ``field`` is kept); any other is left as
    it is."""
    try:
      yield
    except ConfigError as e:
      if e.field not in self._table or e.config not in (None, self.config_cls.__name__):
        raise
      raise e.renamed("--" + self.flag_name(e.field),
                      {f: "--" + self.flag_name(f) for f in e.related if f in self._table}
                      ) from e

  def items(self) -> Iterator[Tuple[str, str]]:
    """``(field, flag)`` pairs of the table, in declaration order."""
    for field in self._table:
      yield field, self.flag_name(field)
