"""Our own object-based checkpoints: backbone-only files and partial restore of run items.

Training runs write ``tf.train.Checkpoint(backbone=..., projection_head=...,
classification_head=..., probe_head=..., optimizer=..., step=...)`` through a
``tf.train.CheckpointManager`` in ``<run_dir>/checkpoints/``. This module restores any
subset of those items from such a checkpoint, and checks — before touching any variable —
that every variable of a restored item is in the file with the same shape, so a checkpoint
of another variant fails loudly instead of loading half a network.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Dict, Optional, Tuple

import keras
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from remedis_tf.errors import CheckpointError
from remedis_tf.weights import differences

ITEMS = ("backbone", "projection_head", "classification_head", "probe_head", "optimizer", "step")


@dataclasses.dataclass(frozen=True)
class RestoreReport:
  """What a restore did.

  Attributes:
    path: the checkpoint prefix read.
    restored: items restored (all their variables matched by key and shape).
    absent: requested items that the checkpoint does not hold (left untouched).
    num_variables: variables restored over all items.
    ignored: checkpoint keys of restored items that were not used (e.g. a stored BiT head).
  """
  path: str
  restored: Tuple[str, ...]
  absent: Tuple[str, ...] = ()
  num_variables: int = 0
  ignored: Tuple[str, ...] = ()


def resolve_checkpoint(path: str) -> str:
  """Returns a checkpoint prefix for a prefix, a checkpoint directory or a run directory.

  Directories use ``tf.train.latest_checkpoint`` on ``path``, then ``path/best`` (a
  fine-tuned run directory's model-selection checkpoint), then ``path/checkpoints`` (the
  latest); a directory without a state file but a single ``*.index`` uses that checkpoint.
  Pass ``run_dir/checkpoints`` to start from a fine-tuned run's latest weights instead.
  """
  path = str(path).rstrip("/") or "/"
  if tf.io.gfile.exists(path + ".index"):
    return path
  if tf.io.gfile.isdir(path):
    for directory in (path, os.path.join(path, "best"), os.path.join(path, "checkpoints")):
      if not tf.io.gfile.isdir(directory):
        continue
      latest = tf.train.latest_checkpoint(directory)
      if latest:
        return latest
      indexes = tf.io.gfile.glob(os.path.join(directory, "*.index"))
      if len(indexes) == 1:
        return indexes[0][:-len(".index")]
      if len(indexes) > 1:
        raise CheckpointError(f"{directory} holds {len(indexes)} checkpoints and no 'checkpoint' "
                              "state file; pass a checkpoint prefix")
  raise CheckpointError(f"no checkpoint found at {path} (tried it as a prefix, as a "
                        "directory and its checkpoints/ subdirectory)")


class CheckpointGraph:
  """The object graph and variable shapes of a checkpoint, read without restoring.

  Object-based checkpoints name each variable after the *first* path that reaches it
  (e.g. a Keras optimizer's ``_trainable_variables/3`` may name a backbone kernel), so
  matching walks the stored object graph by attribute names instead of comparing keys.
  """

  def __init__(self, prefix: str):
    self.prefix = prefix
    try:
      reader = tf.train.load_checkpoint(prefix)
      self._shapes = reader.get_variable_to_shape_map()
      self._graph = trackable_object_graph_pb2.TrackableObjectGraph()
      self._graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    except (tf.errors.OpError, ValueError) as e:
      raise CheckpointError(f"unreadable object-based checkpoint {prefix}: {e}"
                            .replace("\n", " "))

  def _child(self, node_id: int, name: str) -> Optional[int]:
    for ref in self._graph.nodes[node_id].children:
      if ref.local_name == name:
        return ref.node_id
    return None

  def find(self, path: Tuple[str, ...]) -> Optional[int]:
    """Node id reached from the root by attribute names ``path`` (None if absent)."""
    node = 0
    for name in path:
      node = self._child(node, name)
      if node is None:
        return None
    return node

  def variable_shape(self, node_id: int) -> Optional[Tuple[int, ...]]:
    for attr in self._graph.nodes[node_id].attributes:
      if attr.name == "VARIABLE_VALUE" and attr.checkpoint_key in self._shapes:
        return tuple(self._shapes[attr.checkpoint_key])
    return None

  def top_level(self) -> Tuple[str, ...]:
    return tuple(ref.local_name for ref in self._graph.nodes[0].children
                 if ref.local_name != "save_counter")

  def variables_under(self, path: Tuple[str, ...]) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
    """``{path: shape}`` of every variable reachable below ``path`` (breadth-first)."""
    start = self.find(path)
    if start is None:
      return {}
    out, visited = {}, {start}
    queue = collections.deque([(start, path)])
    while queue:
      node, node_path = queue.popleft()
      shape = self.variable_shape(node)
      if shape is not None:
        out[node_path] = shape
      for ref in self._graph.nodes[node].children:
        if ref.node_id not in visited:
          visited.add(ref.node_id)
          queue.append((ref.node_id, node_path + (ref.local_name,)))
    return out


def variable_paths(name: str, trackable) -> Dict[Tuple[str, ...], object]:
  """``{attribute path: variable}`` of ``trackable`` saved as item ``name`` (breadth-first)."""
  if isinstance(trackable, (tf.Variable, keras.Variable)):
    return {(name,): trackable}
  view = tf.train.TrackableView(trackable)
  out, visited = {}, {id(trackable)}
  queue = collections.deque([(trackable, (name,))])
  while queue:
    node, path = queue.popleft()
    for child_name, child in view.children(node).items():
      if id(child) in visited:
        continue
      visited.add(id(child))
      if isinstance(child, (tf.Variable, keras.Variable)):
        out[path + (child_name,)] = child
      else:
        queue.append((child, path + (child_name,)))
  return out


def _build_if_needed(trackable) -> None:
  if hasattr(trackable, "build_for") and not trackable.built:
    trackable.build_for()


def _in_variable_order(trackable, paths: Dict[Tuple[str, ...], object]
                       ) -> Dict[Tuple[str, ...], object]:
  """``paths`` ordered as ``trackable`` creates its variables (a Keras model's ``weights``:
  root convolution first), so a message lists the first differing variable first; paths
  of variables it does not list keep their breadth-first order, after the others."""
  listed = getattr(trackable, "weights", None) or getattr(trackable, "variables", None) or ()
  rank = {id(v): i for i, v in enumerate(listed)}
  order = sorted(enumerate(paths), key=lambda ip: (rank.get(id(paths[ip[1]]), len(rank)),
                                                   ip[0]))
  return {p: paths[p] for _, p in order}


def _check_item(graph: CheckpointGraph, name, trackable, allow_extra=()):
  """Returns (num matched, ignored paths); raises CheckpointError listing differences
  (each kind in the item's variable order)."""
  expected = {p: tuple(v.shape) for p, v in
              _in_variable_order(trackable, variable_paths(name, trackable)).items()}
  stored = {}
  for p in expected:
    node = graph.find(p)
    if node is not None and graph.variable_shape(node) is not None:
      stored[p] = graph.variable_shape(node)
  missing = [p for p in expected if p not in stored]
  mismatched = [p for p in expected if p in stored and stored[p] != expected[p]]
  # Optimizer slots are created lazily, so extra optimizer entries are not an error.
  lenient = isinstance(trackable, keras.optimizers.Optimizer)
  extra = {p: s for p, s in graph.variables_under((name,)).items() if p not in expected}
  ignored = ["/".join(p) for p in extra if lenient or p[:2] in allow_extra]
  unexpected = [p for p in extra if "/".join(p) not in ignored]
  stored.update(extra)
  if missing or mismatched or unexpected:
    described = differences.describe_differences(missing, unexpected, mismatched, expected,
                                                 stored, name="/".join)
    variant = getattr(trackable, "variant", None)
    what = f"{name} ({variant})" if variant else name
    raise CheckpointError(f"{graph.prefix}: item {what} does not match: {described}")
  return len(expected), ignored


def save_backbone_checkpoint(backbone, prefix: str) -> str:
  """Writes a checkpoint holding only ``backbone=`` at ``prefix``; returns the prefix written."""
  _build_if_needed(backbone)
  parent = os.path.dirname(prefix)
  if parent:
    tf.io.gfile.makedirs(parent)
  return tf.train.Checkpoint(backbone=backbone).write(prefix)


def restore_items(path: str, **trackables) -> RestoreReport:
  """Restores the named items (e.g. ``backbone=model, step=var``) that the checkpoint holds.

  ``path`` is a prefix, checkpoint directory or run directory. Items must be built (their
  variables created; Keras optimizers via ``optimizer.build(vars)``) so they can be checked.
  Items the checkpoint lacks are reported as absent, not an error; a present item whose
  variables differ in keys or shapes raises CheckpointError before anything is assigned.
  """
  if not trackables:
    raise ValueError("restore_items needs at least one item, e.g. backbone=model")
  prefix = resolve_checkpoint(path)
  graph = CheckpointGraph(prefix)
  present = {n: obj for n, obj in trackables.items() if graph.find((n,)) is not None}
  absent = [n for n in trackables if n not in present]
  total, ignored = 0, []
  for name, obj in present.items():
    _build_if_needed(obj)
    n, ign = _check_item(graph, name, obj,
                         allow_extra=(("backbone", "head"),) if name == "backbone" else ())
    total += n
    ignored += ign
  if present:
    status = tf.train.Checkpoint(**present).read(prefix)
    status.expect_partial()
    try:
      status.assert_existing_objects_matched()
    except AssertionError as e:
      raise CheckpointError(f"{prefix}: restore left objects unmatched: {e}".replace("\n", " "))
  return RestoreReport(path=prefix, restored=tuple(present), absent=tuple(absent),
                       num_variables=total, ignored=tuple(ignored))


def restore_backbone(backbone, path: str) -> RestoreReport:
  """Restores only the ``backbone`` item of a checkpoint into ``backbone``.

  Every backbone variable must be present with the same shape and the checkpoint's backbone
  may hold nothing else (a stored classification head of the backbone is ignored), else
  CheckpointError lists the differences (e.g. a checkpoint of another variant).
  """
  report = restore_items(path, backbone=backbone)
  if report.absent:
    items = ", ".join(CheckpointGraph(report.path).top_level()) or "nothing"
    raise CheckpointError(f"{report.path} has no backbone item (it holds: {items})")
  return report
