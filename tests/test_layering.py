"""The house rules of docs/architecture.md, checked on the source text.

* Imports run one way: experiments → runs → train/weights → pieces (models, data, optim,
  losses, eval, synthetic) → utilities; no circle between modules.
* No import inside a function, except a heavy optional dependency deferred with a comment.
* No module over ~400 lines without a reason at its top.
* No public function, class or method that only tests use (tests keep their helpers), and
  one copy of BiT-HyperRule's step table.
"""

import ast
import os
import re
from typing import Dict, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

UTILITIES = {"errors", "io_utils", "configs", "remote_io", "run_lock", "run_guard",
             "stateless_random", "tasks"}
PIECES = {"models", "data", "optim", "losses", "eval", "synthetic"}
CORE = {"train", "weights"}
# Same-layer imports that would blur the picture: the left may never import the right.
FORBIDDEN = {("data", "eval"), ("data", "models"), ("data", "optim"), ("data", "losses"),
             ("models", "data"), ("models", "eval"), ("optim", "data"), ("optim", "eval"),
             ("weights", "train"), ("synthetic", "eval")}
# Optional or heavy dependencies a function may import late, with a comment saying why.
DEFERRABLE = {"pydicom", "tensorflow_hub", "tensorflow_datasets", "torch", "sklearn",
              "matplotlib", "pylibjpeg"}
MAX_LINES = 400
LONG_REASON = "long because"


def _modules() -> Dict[str, str]:
  """Dotted module name → file path, for remedis_tf/ and experiments/."""
  out = {}
  for top in ("remedis_tf", "experiments"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(dirpath, f)
          name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          out[name.removesuffix(".__init__")] = path
  return out


MODULES = _modules()


def _resolve(name: str) -> str:
  """The module a dotted import name refers to (a name imported from a module → it)."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name


def _imports(path: str) -> List[Tuple[str, int, bool]]:
  """(imported project module, line, at module level) for each import in ``path``."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  found = []

  def visit(node, top_level):
    for child in ast.iter_child_nodes(node):
      inner = top_level and not isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if isinstance(child, ast.ImportFrom) and child.module:
        for alias in child.names:
          found.append((f"{child.module}.{alias.name}", child.lineno, top_level))
      elif isinstance(child, ast.Import):
        for alias in child.names:
          found.append((alias.name, child.lineno, top_level))
      visit(child, inner)

  visit(tree, True)
  return found


def layer(module: str) -> Tuple[int, str]:
  """(rank, group) of a project module: 0 utilities … 4 binaries, 5 the public API."""
  parts = module.split(".")
  if parts[0] == "experiments":
    return 4, "experiments"
  if module == "remedis_tf":
    return 5, "api"
  group = parts[1]
  if group in UTILITIES:
    return 0, group
  if group in PIECES:
    return 1, group
  if group in CORE:
    return 2, group
  if group == "runs":
    return 3, group
  raise AssertionError(f"{module}: no layer assigned; add it to tests/test_layering.py and "
                       "docs/architecture.md")


def _project_edges() -> Dict[str, Set[str]]:
  edges = {}
  for name, path in MODULES.items():
    deps = set()
    for imported, _, top in _imports(path):
      if imported.split(".")[0] in ("remedis_tf", "experiments") and top:
        target = _resolve(imported)
        if target and target != name:
          deps.add(target)
    edges[name] = deps
  return edges


EDGES = _project_edges()


def test_every_module_has_a_layer():
  for name in MODULES:
    layer(name)


def test_imports_run_one_way():
  wrong = []
  for name, deps in EDGES.items():
    rank, group = layer(name)
    for dep in deps:
      if dep == "remedis_tf":
        wrong.append(f"{name} imports the public API package; import the module instead")
        continue
      dep_rank, dep_group = layer(dep)
      if dep_rank > rank:
        wrong.append(f"{name} ({group}) imports {dep} ({dep_group}), a higher layer")
      elif (group, dep_group) in FORBIDDEN:
        wrong.append(f"{name} ({group}) imports {dep} ({dep_group})")
  assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
  """No circle among the module-level imports of remedis_tf/ and experiments/ (the package
  root's re-exports are left out; no module may import the root, see above)."""
  state: Dict[str, int] = {}
  cycles = []

  def dfs(node, stack):
    state[node] = 1
    stack.append(node)
    for dep in sorted(EDGES.get(node, ())):
      if dep == "remedis_tf":
        continue
      if state.get(dep) == 1:
        cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
      elif dep not in state:
        dfs(dep, stack)
    stack.pop()
    state[node] = 2

  for name in sorted(EDGES):
    if name not in state:
      dfs(name, [])
  assert not cycles, "\n".join(cycles)


def test_imports_inside_functions_only_defer_optional_dependencies():
  wrong = []
  for name, path in MODULES.items():
    lines = open(path, encoding="utf-8").read().splitlines()
    for imported, lineno, top in _imports(path):
      if top:
        continue
      root = imported.split(".")[0]
      if root not in DEFERRABLE:
        wrong.append(f"{name}:{lineno} imports {imported} inside a function")
      elif "#" not in lines[lineno - 1]:
        wrong.append(f"{name}:{lineno} defers {root} without a comment saying why")
  assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small_or_says_why(name):
  text = open(MODULES[name], encoding="utf-8").read()
  num_lines = text.count("\n")
  if num_lines <= MAX_LINES:
    return
  doc = ast.get_docstring(ast.parse(text)) or ""
  assert LONG_REASON in doc, (
      f"{name} has {num_lines} lines (> {MAX_LINES}); split it or say at its top why it is "
      f"{LONG_REASON!r} ...")


def test_layer_rules_catch_a_violation():
  """The checks above can fail: a piece importing orchestration is reported."""
  assert layer("remedis_tf.data.pipeline")[0] < layer("remedis_tf.train.loop")[0]
  assert layer("remedis_tf.runs.x")[0] > layer("remedis_tf.weights.preset")[0]
  assert ("weights", "train") in FORBIDDEN
  with pytest.raises(AssertionError):
    layer("remedis_tf.unknown_place.module")


def _documented_modules() -> Set[str]:
  """Module files named in docs/architecture.md's module tables, relative to remedis_tf/.

  A row names files as ``pkg/mod.py``, or as a folder ``pkg/`` followed by ``mod.py``
  names that live in it."""
  text = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
  text = text.split("## Modules", 1)[1]
  found = set()
  for line in text.splitlines():
    if not line.startswith("| `"):
      continue
    cell = line.split("|")[1]
    prefix = ""
    for token in re.findall(r"`([\w/]+(?:\.py|/))`", cell):
      if token.endswith("/"):
        prefix = token
      else:
        found.add(token if "/" in token else prefix + token)
  return found


def test_architecture_doc_names_every_module():
  actual = {os.path.relpath(p, os.path.join(ROOT, "remedis_tf")) for n, p in MODULES.items()
            if n.startswith("remedis_tf") and (
                not p.endswith("__init__.py") or n == "remedis_tf")}
  documented = _documented_modules()
  assert not documented - actual, f"documented but absent: {sorted(documented - actual)}"
  assert not actual - documented, f"not in docs/architecture.md: {sorted(actual - documented)}"


# Code outside tests that may use the library: a public name used only in its own
# definition there is test-only code (or dead code) and belongs in tests/ or nowhere.
USER_CODE = ("remedis_tf", "experiments", "benchmarks", "scripts")
# Framework hooks called by Keras / TensorFlow / pytest, never by name in our code.
FRAMEWORK_HOOKS = {"call", "build", "get_config", "from_config", "compute_output_shape",
                   "compute_output_spec", "update_step", "result", "reset_state",
                   "update_state", "get_build_config", "build_from_config"}


def _public_definitions(path: str) -> List[Tuple[str, int]]:
  """Top-level public functions/classes and the public methods of public classes."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  found = []
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
      found.append((node.name, node.lineno))
      if isinstance(node, ast.ClassDef):
        found += [(f.name, f.lineno) for f in node.body
                  if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")
                  and f.name not in FRAMEWORK_HOOKS]
  return found


def _user_code_texts() -> Dict[str, str]:
  texts = {}
  for top in USER_CODE:
    for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
      for f in files:
        if f.endswith((".py", ".sh")):
          texts[os.path.join(dirpath, f)] = open(os.path.join(dirpath, f),
                                                 encoding="utf-8").read()
  return texts


def test_no_public_code_only_tests_use():
  texts = _user_code_texts()
  unused = []
  for name, path in MODULES.items():
    if not name.startswith("remedis_tf"):
      continue
    for fn, line in _public_definitions(path):
      pattern = re.compile(r"\b" + re.escape(fn) + r"\b")
      if sum(len(pattern.findall(t)) for t in texts.values()) <= 1:  # the definition only
        unused.append(f"{os.path.relpath(path, ROOT)}:{line} {fn}")
  assert not unused, ("public names no user code uses (move them into tests/ or delete "
                      f"them): {unused}")


def test_hyperrule_table_has_one_home():
  """BiT-HyperRule's step table (100/200/300/400/500, 500/3000/.../10000, ...) is written
  once, in optim/schedules.py; everything else derives from it."""
  table_row = re.compile(r"\(\s*500\s*,\s*3000\s*,\s*6000|\(\s*100\s*,\s*200\s*,\s*300\s*,"
                         r"\s*400\s*,\s*500|\(\s*500\s*,\s*6000\s*,\s*12000")
  homes = sorted(os.path.relpath(p, ROOT) for p, t in _user_code_texts().items()
                 if table_row.search(t))
  assert homes == [os.path.join("remedis_tf", "optim", "schedules.py")], homes
