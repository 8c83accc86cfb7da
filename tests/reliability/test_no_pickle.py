"""No pickle anywhere: scans every Python file of the project for unsafe deserialisation.

Flags: importing pickle-family modules, ``allow_pickle=True``, ``np.load`` without an
explicit ``allow_pickle=False``, Keras ``load_model`` without an explicit
``safe_mode=True`` (or with ``safe_mode=False``), ``yaml.load``/``yaml.unsafe_load``,
``torch.load`` without an explicit ``weights_only=True`` (torch's restricted unpickler that
accepts only tensors and plain containers), ``pandas.read_pickle``, ``marshal.loads``.
"""

import ast
import os
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("remedis_tf", "experiments", "tests", "scripts", "benchmarks")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}


def _dotted(node: ast.AST) -> str:
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    return f"{_dotted(node.value)}.{node.attr}"
  return ""


def _keyword(call: ast.Call, name: str):
  for kw in call.keywords:
    if kw.arg == name:
      return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
  return "<absent>"


def unsafe_uses(source: str, filename: str = "<src>") -> List[str]:
  """``file:line: what`` for every unsafe pattern in ``source``."""
  problems = []
  tree = ast.parse(source, filename)
  for node in ast.walk(tree):
    where = f"{filename}:{getattr(node, 'lineno', 0)}"
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] in PICKLE_MODULES:
          problems.append(f"{where}: import {alias.name}")
    elif isinstance(node, ast.ImportFrom):
      if (node.module or "").split(".")[0] in PICKLE_MODULES:
        problems.append(f"{where}: from {node.module} import ...")
    elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
      if not (isinstance(node.value, ast.Constant) and node.value.value is False):
        problems.append(f"{where}: allow_pickle is not False")
    elif isinstance(node, ast.Call):
      name = _dotted(node.func)
      last = name.rsplit(".", 1)[-1]
      if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
        problems.append(f"{where}: {name} without allow_pickle=False")
      elif last == "load_model" and "keras" in name and _keyword(node, "safe_mode") is not True:
        problems.append(f"{where}: {name} without safe_mode=True")
      elif name == "torch.load" and _keyword(node, "weights_only") is not True:
        problems.append(f"{where}: {name} without weights_only=True")
      elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load",
                    "pd.read_pickle", "pandas.read_pickle", "marshal.loads", "marshal.load"):
        problems.append(f"{where}: {name}")
      if _keyword(node, "safe_mode") is False:
        problems.append(f"{where}: safe_mode=False")
  return problems


def _python_files():
  this = os.path.abspath(__file__)
  for top in SCANNED:
    for parent, dirs, names in os.walk(os.path.join(ROOT, top)):
      dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
      for name in names:
        path = os.path.join(parent, name)
        if name.endswith(".py") and os.path.abspath(path) != this:
          yield path


def test_scanner_catches_unsafe_patterns():
  bad = "\n".join([
      "import pickle", "from joblib import load", "import numpy as np", "import yaml",
      "import keras", "np.load('x.npy')", "np.load('x.npy', allow_pickle=True)",
      "keras.models.load_model('m.keras')", "keras.saving.load_model('m', safe_mode=False)",
      "yaml.load(open('c.yaml'))", "np.savez('a', b=1)", "np.load('y', allow_pickle=False)",
      "keras.models.load_model('m.keras', safe_mode=True)", "torch.load('m.pth')",
      "torch.load('m.pth', weights_only=False)", "torch.load('m.pth', weights_only=True)"])
  found = unsafe_uses(bad)
  lines = {int(f.split(":")[1]) for f in found}
  assert lines == {1, 2, 6, 7, 8, 9, 10, 14, 15}, found  # 11-13 and 16 are safe


def test_source_tree_has_no_unsafe_deserialisation():
  files = list(_python_files())
  assert len(files) > 50  # really scanning the project
  problems = []
  for path in files:
    with open(path, encoding="utf-8") as f:
      problems += unsafe_uses(f.read(), os.path.relpath(path, ROOT))
  assert not problems, "\n".join(problems)
