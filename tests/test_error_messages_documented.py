"""docs/troubleshooting.md lists every error message a binary can print.

A binary prints ``error: <message>`` for every ``RemedisError`` (and for the messages
``experiments/_cli.py`` passes to ``fail``). This test reads the message templates from
the source: the first argument of every call of one of the error classes (``raise
DataError(f"…")``, ``return StorageError(…)``) and of ``fail(…)``, in remedis_tf/ and
experiments/. A ``ConfigError`` that names its field (``ConfigError("must be > 0, got …",
field="temperature")``, optionally ``value=`` and ``config=``) is read as the message it
prints, ``temperature must be > 0, got …`` (``Config.field=…: reason``). Each template's
stable text must appear in the troubleshooting page:

* the template is split at its placeholders (``{path}``, ``{e}``) into literal parts;
* its stable text is the literal part before the first placeholder when that is at
  least :data:`MIN_PREFIX` characters long, else its longest literal part, without the
  punctuation that joins it to a placeholder (``: ``, `` (``);
* the page must contain the first :data:`MAX_CHECKED` characters of it (cut at a word
  boundary), whitespace collapsed and ``\\|`` read as ``|``.

Templates whose literal parts are all shorter than :data:`MIN_PREFIX` (``f"{path}: {e}"``,
a message passed through from elsewhere) have nothing stable to document and are skipped;
so are messages built in a variable first.
"""

import ast
import os
import re
from typing import Iterator, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "troubleshooting.md")
ERRORS = {"RemedisError", "ConfigError", "DataError", "CheckpointError", "TrainingError",
          "StorageError", "RunDirLockedError"}
PRINTERS = {"fail"}
MIN_PREFIX = 10
MAX_CHECKED = 48
# Punctuation around a placeholder ("{path}: …", "… ({e})") is not part of the stable text.
_EDGES = " :;,.("


def _literal_parts(node: ast.AST) -> Optional[List[Optional[str]]]:
  """A message expression as literal strings and None for each placeholder; None when it
  is not built from literals (a variable, a call)."""
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return [node.value]
  if isinstance(node, ast.JoinedStr):
    return [v.value if isinstance(v, ast.Constant) else None for v in node.values]
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
    left, right = _literal_parts(node.left), _literal_parts(node.right)
    return (left or [None]) + (right or [None]) if left or right else None
  if isinstance(node, ast.IfExp):  # "a" if c else "b": document both
    return None
  return None


def _field_message_parts(reason: Optional[List[Optional[str]]], keywords: dict
                         ) -> List[Optional[str]]:
  """The parts of the message ``ConfigError(reason, field=…, value=…, config=…)`` prints
  (remedis_tf.errors.ConfigError): ``[config.]field reason`` or
  ``[config.]field=value: reason``; a part that is not a literal is a placeholder."""
  def literal(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
  parts: List[Optional[str]] = []
  if "config" in keywords:
    parts += [literal(keywords["config"]), "."]
  parts.append(literal(keywords["field"]))
  parts += ["=", None, ": "] if "value" in keywords else [" "]
  return parts + (reason or [None])


def templates() -> Iterator[Tuple[str, int, List[Optional[str]]]]:
  """``(file, line, parts)`` of every message template in the source."""
  for top in ("remedis_tf", "experiments"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
      for name in sorted(files):
        if not name.endswith(".py"):
          continue
        path = os.path.join(dirpath, name)
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
          if not isinstance(node, ast.Call) or not node.args:
            continue
          func = node.func
          called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
          if called in ERRORS or (called in PRINTERS and top == "experiments"):
            parts = _literal_parts(node.args[0])
            keywords = {k.arg: k.value for k in node.keywords}
            if called == "ConfigError" and "field" in keywords:
              parts = _field_message_parts(parts, keywords)
            if parts is not None:
              yield os.path.relpath(path, ROOT), node.lineno, parts


def _normal(text: str) -> str:
  return " ".join(text.split())


def stable_text(parts: List[Optional[str]]) -> str:
  """What the page must contain of a template (module docstring); '' when nothing."""
  segments, current = [], ""
  for part in parts:
    if part is None:
      segments.append(current)
      current = ""
    else:
      current += part
  segments.append(current)
  segments = [_normal(s).strip(_EDGES) for s in segments]
  first = segments[0]
  text = first if len(first) >= MIN_PREFIX else max(segments, key=len)
  if len(text) < MIN_PREFIX:
    return ""
  if len(text) > MAX_CHECKED:
    text = text[:MAX_CHECKED].rsplit(" ", 1)[0].strip(_EDGES)
  return text


def page_text() -> str:
  return _normal(open(DOC, encoding="utf-8").read().replace("\\|", "|"))


def undocumented() -> List[str]:
  page = page_text()
  return [f"{path}:{line}: {text!r}" for path, line, parts in templates()
          for text in [stable_text(parts)] if text and text not in page]


def test_every_error_message_is_in_troubleshooting():
  missing = undocumented()
  assert not missing, (f"{len(missing)} error message(s) a binary can print are not in "
                       "docs/troubleshooting.md:\n" + "\n".join(missing))


def test_the_check_reads_messages_and_can_fail():
  found = {(path, text) for path, _, parts in templates() for text in [stable_text(parts)]}
  # A message of a library module, one of a binary, one passed to fail(): all extracted.
  assert ("remedis_tf/eval/calibration.py", "unreadable temperature file") in found
  assert any(p == "experiments/evaluate.py" and t.startswith("--eval_set=") for p, t in found)
  assert ("experiments/_cli.py", "see --helpfull)") in found  # fail(f"{e} (see --helpfull)")
  # ConfigError(reason, field=..., value=..., config=...): read as the message it prints.
  assert ("remedis_tf/train/loop.py", "eval_every must be >= 0, got") in found
  assert ("remedis_tf/optim/factory.py", "OptimizerConfig") in found
  tree = ast.parse('raise DataError(f"{path}: a message nobody wrote down ({e})")')
  parts = _literal_parts(tree.body[0].exc.args[0])
  assert stable_text(parts) == "a message nobody wrote down"
  assert stable_text(parts) not in page_text()
  assert stable_text([None, ": ", None]) == ""  # nothing stable to document
  long = stable_text(["--train_steps must be >= 0, got a value that is far too long ", None])
  assert long == "--train_steps must be >= 0, got a value that is"
