"""Markdown reports built from structured sections.

The report is generic: callers (the demo, experiment binaries) decide the content and pass
:class:`Section` s made of blocks — paragraphs (``str``), :class:`Table` s (rows as dicts)
and :class:`Image` s (PNG paths, linked relative to the report's folder). Numbers are
printed with 3 decimals, and a value with a confidence interval as ``0.812 [0.780, 0.840]``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from remedis_tf import io_utils
from remedis_tf.errors import ConfigError

REPORT_FILE = "report.md"
MISSING = "n/a"


@dataclasses.dataclass(frozen=True)
class Table:
  """A table: ``rows`` are dicts; ``columns`` (default: keys in first-seen order) pick them."""
  rows: Sequence[Mapping[str, Any]]
  columns: Optional[Sequence[str]] = None
  caption: str = ""


@dataclasses.dataclass(frozen=True)
class Image:
  """An image link; ``path`` absolute, or relative to the report folder."""
  path: str
  caption: str = ""


@dataclasses.dataclass(frozen=True)
class Section:
  """A heading (``level`` 1-6) followed by blocks: ``str`` paragraphs, Table, Image, Section."""
  title: str
  blocks: Sequence[Any] = ()
  level: int = 2


Block = Union[str, Table, Image, Section, Mapping[str, Any]]


# ---------------------------------------------------------------------------- formatting


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def format_number(x: Any, digits: int = 3) -> str:
  """Floats → fixed ``digits`` decimals; ints stay ints; None/NaN/inf → ``n/a``."""
  if x is None:
    return MISSING
  if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
    return str(int(x))
  x = float(x)
  return f"{x:.{digits}f}" if math.isfinite(x) else MISSING


def format_ci(value: Any, lower: Any = None, upper: Any = None, digits: int = 3) -> str:
  """``0.812 [0.780, 0.840]``; just the value when a bound is missing/NaN."""
  text = format_number(value, digits)
  if text == MISSING:
    return text
  if lower is None or upper is None or not (math.isfinite(float(lower))
                                            and math.isfinite(float(upper))):
    return text
  return f"{text} [{float(lower):.{digits}f}, {float(upper):.{digits}f}]"


def format_cell(x: Any, digits: int = 3) -> str:
  """One table cell: CI dicts ``{value, lower, upper}`` and 3-tuples print as intervals."""
  if isinstance(x, Mapping) and "value" in x:
    return format_ci(x.get("value"), x.get("lower"), x.get("upper"), digits)
  if isinstance(x, (tuple, list)) and len(x) == 3 and all(
      v is None or _is_number(v) for v in x):
    return format_ci(*x, digits=digits)
  if x is None or _is_number(x):
    return format_number(x, digits)
  return str(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None,
                   digits: int = 3) -> str:
  """GitHub-flavoured Markdown table (no trailing newline); missing keys print ``n/a``."""
  if columns is None:
    columns = []
    for row in rows:
      columns.extend(k for k in row if k not in columns)
  if not columns:
    return ""
  lines = ["| " + " | ".join(format_cell(c) for c in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(format_cell(row.get(c), digits) for c in columns) + " |")
  return "\n".join(lines)


# ------------------------------------------------------------------------------ building


def _relative_link(path: str, out_dir: str) -> str:
  """Link to ``path`` as seen from ``out_dir`` (posix separators)."""
  if "://" in path or "://" in out_dir:
    prefix = out_dir.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path
  if not os.path.isabs(path):
    return path.replace(os.sep, "/")
  return os.path.relpath(path, os.path.abspath(out_dir)).replace(os.sep, "/")


def _as_block(block: Block) -> Any:
  if isinstance(block, (str, Table, Image, Section)):
    return block
  if isinstance(block, Mapping):
    if "rows" in block:
      return Table(block["rows"], block.get("columns"), block.get("caption", ""))
    if "image" in block or "path" in block:
      return Image(block.get("image", block.get("path")), block.get("caption", ""))
    if "title" in block:
      return _as_section(block)
  raise ConfigError(f"unknown report block of type {type(block).__name__}: {str(block)[:60]!r}")


def _as_section(section: Union[Section, Mapping[str, Any]]) -> Section:
  """Accepts a Section or a dict with ``title`` and ``blocks`` and/or
  ``paragraphs``/``tables``/``images`` (rendered in that order)."""
  if isinstance(section, Section):
    return section
  if not isinstance(section, Mapping) or "title" not in section:
    raise ConfigError(f"a report section needs a title; got {str(section)[:60]!r}")
  blocks: List[Any] = list(section.get("blocks", ()))
  blocks += list(section.get("paragraphs", ()))
  blocks += [t if isinstance(t, Table) else dict(t) for t in section.get("tables", ())]
  blocks += [i if isinstance(i, Image) else
             (Image(i) if isinstance(i, str) else dict(i)) for i in section.get("images", ())]
  return Section(section["title"], tuple(blocks), int(section.get("level", 2)))


def _render_section(section: Section, out_dir: str, lines: List[str]) -> None:
  level = min(max(section.level, 1), 6)
  lines += ["#" * level + " " + section.title, ""]
  for block in section.blocks:
    block = _as_block(block)
    if isinstance(block, str):
      lines += [block.strip(), ""]
    elif isinstance(block, Table):
      if block.caption:
        lines += [f"*{block.caption}*", ""]
      lines += [markdown_table(block.rows, block.columns) or f"({MISSING}: empty table)", ""]
    elif isinstance(block, Image):
      alt = block.caption or os.path.basename(block.path)
      lines += [f"![{alt}]({_relative_link(block.path, out_dir)})", ""]
      if block.caption:
        lines += [f"*{block.caption}*", ""]
    else:
      _render_section(dataclasses.replace(block, level=max(block.level, level + 1)), out_dir,
                      lines)


def render_report(sections: Iterable[Union[Section, Mapping[str, Any]]], out_dir: str = ".",
                  title: Optional[str] = None) -> str:
  """The Markdown text of a report (image links relative to ``out_dir``)."""
  lines: List[str] = []
  if title:
    lines += [f"# {title}", ""]
  for section in sections:
    _render_section(_as_section(section), out_dir, lines)
  return "\n".join(lines).rstrip() + "\n"


def write_report(out_dir: str, sections: Iterable[Union[Section, Mapping[str, Any]]],
                 title: Optional[str] = None, filename: str = REPORT_FILE) -> str:
  """Renders ``sections`` and writes ``out_dir/filename`` atomically; returns its path."""
  path = os.path.join(out_dir, filename)
  io_utils.atomic_write_text(path, render_report(sections, out_dir, title))
  return path
