"""TF2 SavedModel / TF Hub interop for the BiT backbone: import, wrap, export, inspect.

Published BiT and REMEDIS models are TF2 SavedModels called on float32 ``[B,H,W,3]`` images
in ``[0, 1]``; REMEDIS ones return the spatial feature map ``[B,h,w,C]``. Two ways in:

* :func:`load_savedmodel_into` copies the SavedModel's variables into a native
  :class:`ResNetV2` by mapping variable *names* to BiT keys (fast, trainable, mixed precision,
  no foreign program kept). Used whenever the names follow BiT's scheme.
* :class:`SavedModelBackbone` wraps the SavedModel's ``__call__`` with
  ``keras.layers.TFSMLayer`` (trainable) when they do not.

A SavedModel is a program: load only trusted ones. :func:`inspect_savedmodel` lists
variables by parsing the protos, without loading or running anything.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from keras import ops

from remedis_tf import io_utils
from remedis_tf.errors import CheckpointError
from remedis_tf.models import resnet_v2
from remedis_tf.weights import bit_npz

_ANCHOR = re.compile(r"^(root_block|group_norm|head|block\d+)$")
_UNIT = re.compile(r"^unit0*(\d+)$")
_VALID_KEY = re.compile(
    r"^resnet/("
    r"root_block/standardized_conv2d/kernel"
    r"|block\d+/unit\d\d/[abc]/(group_norm/(gamma|beta)|standardized_conv2d/kernel)"
    r"|block\d+/unit\d\d/a/proj/standardized_conv2d/kernel"
    r"|group_norm/(gamma|beta)"
    r"|head/conv2d/(kernel|bias))$")


def bit_key_from_name(name: str) -> Optional[str]:
  """Maps a variable name to its BiT key, or None if it is not a BiT variable.

  Tolerates ``:0`` suffixes, any leading scopes (``resnet/``, ``resnet50/``, ``module/``...),
  Keras-3 ``__`` separators, un-padded unit numbers (``unit1``) and TF2-Keras ``head/dense``
  heads. E.g. ``resnet50/block1/unit1/a/group_norm/gamma:0`` →
  ``resnet/block1/unit01/a/group_norm/gamma``.
  """
  name = re.sub(r":\d+$", "", name).replace("__", "/")
  parts = [p for p in name.split("/") if p]
  for i, part in enumerate(parts):
    if _ANCHOR.match(part):
      break
  else:
    return None
  rest = [_UNIT.sub(lambda m: f"unit{int(m.group(1)):02d}", p) for p in parts[i:]]
  key = "resnet/" + "/".join(rest)
  key = key.replace("resnet/head/dense/", "resnet/head/conv2d/")
  return key if _VALID_KEY.match(key) else None


def resolve_handle(path_or_handle: str) -> str:
  """Returns a SavedModel directory for a local dir, a ``gs://`` path or a TF Hub handle.

  Handles with a URL scheme other than ``gs://`` (e.g. ``https://tfhub.dev/...``) are
  downloaded/cached by ``tensorflow_hub.resolve``.
  """
  handle = str(path_or_handle)
  if handle.startswith("gs://"):
    return handle
  if "://" in handle:
    try:
      import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise CheckpointError(f"resolving {handle} needs tensorflow_hub and tf-keras ({e})")
    try:
      return hub.resolve(handle)
    except Exception as e:  # hub raises many types; report them uniformly
      raise CheckpointError(f"could not resolve TF Hub handle {handle}: {e}".replace("\n", " "))
  if tf.io.gfile.isdir(handle):
    return handle
  raise CheckpointError(f"SavedModel directory not found: {handle}")


def inspect_savedmodel(path: str) -> List[Tuple[str, Tuple[Optional[int], ...], str]]:
  """Lists ``(variable name, shape, dtype)`` of a SavedModel without loading or running it.

  Names come from the object graph in ``saved_model.pb`` (TF2); for TF1-style SavedModels
  without one, from the checkpoint in ``variables/``. Unknown dimensions are None.
  """
  path = resolve_handle(path)
  var_dir = os.path.join(path, "variables")
  if not tf.io.gfile.isdir(var_dir):
    raise CheckpointError(f"{path} is not a SavedModel directory (no variables/ inside)")
  out = []
  pb = os.path.join(path, "saved_model.pb")
  if tf.io.gfile.exists(pb):
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(pb, "rb") as f:
      try:
        proto.ParseFromString(f.read())
      except Exception as e:  # protobuf DecodeError
        raise CheckpointError(f"{pb}: unreadable saved_model.pb ({e})")
    for meta_graph in proto.meta_graphs:
      for node in meta_graph.object_graph_def.nodes:
        if node.WhichOneof("kind") != "variable":
          continue
        var = node.variable
        shape = (None if var.shape.unknown_rank
                 else tuple(d.size if d.size >= 0 else None for d in var.shape.dim))
        out.append((var.name, shape, tf.dtypes.as_dtype(var.dtype).name))
  if out:
    return out
  try:
    reader = tf.train.load_checkpoint(os.path.join(var_dir, "variables"))
  except (tf.errors.OpError, ValueError) as e:
    raise CheckpointError(f"{var_dir}: unreadable variables checkpoint ({e})".replace("\n", " "))
  shapes = reader.get_variable_to_shape_map()
  dtypes = reader.get_variable_to_dtype_map()
  return [(k, tuple(shapes[k]), dtypes[k].name) for k in sorted(shapes)
          if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]


def _load(path: str):
  try:
    return tf.saved_model.load(path)
  except (tf.errors.OpError, ValueError, OSError) as e:
    raise CheckpointError(f"could not load SavedModel {path}: {e}".replace("\n", " "))


def _all_variables(obj) -> List[tf.Variable]:
  """Every tf.Variable reachable from a loaded SavedModel object (deduplicated)."""
  found, seen = [], set()
  view = tf.train.TrackableView(obj)
  queue = collections.deque([obj])
  visited = {id(obj)}
  while queue:
    node = queue.popleft()
    try:
      children = view.children(node)
    except Exception:  # some restored function objects cannot list children
      continue
    for child in children.values():
      if id(child) in visited:
        continue
      visited.add(id(child))
      if isinstance(child, tf.Variable):
        if id(child) not in seen:
          seen.add(id(child))
          found.append(child)
      else:
        queue.append(child)
  if not found and hasattr(obj, "variables"):  # TF1-style SavedModels loaded in TF2
    found = list(obj.variables)
  return found


def savedmodel_bit_arrays(path_or_handle: str) -> Tuple[Dict[str, np.ndarray], List[str]]:
  """Loads a SavedModel and returns ``({BiT key: array}, [ignored variable names])``.

  Raises:
    CheckpointError: no variable name maps to a BiT key, or two variables map to one key.
  """
  path = resolve_handle(path_or_handle)
  loaded = _load(path)
  arrays, owners, ignored = {}, {}, []
  for var in _all_variables(loaded):
    key = bit_key_from_name(var.name)
    if key is None:
      ignored.append(var.name)
      continue
    if key in arrays:
      raise CheckpointError(f"{path}: variables {owners[key]} and {var.name} both map to "
                            f"BiT key {key}")
    arrays[key] = bit_npz.to_bit_layout(key, var.numpy())
    owners[key] = var.name
  if not arrays:
    sample = ", ".join(ignored[:3]) or "none"
    raise CheckpointError(f"{path}: no variable names follow BiT's naming (e.g. {sample}); "
                          "wrap it with SavedModelBackbone instead")
  return arrays, ignored


def load_savedmodel_into(backbone: resnet_v2.ResNetV2, path_or_handle: str,
                         load_head: bit_npz.LoadHead = "auto") -> bit_npz.LoadReport:
  """Copies a BiT/REMEDIS SavedModel's variables into a native ResNetV2 (all-or-nothing).

  Variables are matched by name (see :func:`bit_key_from_name`); names that are not BiT
  variables are ignored and listed in the report. Mismatched, missing or unexpected BiT
  variables raise CheckpointError with expected vs found shapes.
  """
  arrays, ignored = savedmodel_bit_arrays(path_or_handle)
  report = bit_npz.assign_bit_arrays(backbone, arrays, load_head=load_head,
                                     source=str(path_or_handle))
  return dataclasses.replace(report, ignored=tuple(report.ignored) + tuple(ignored))


class SavedModelBackbone(keras.Model):
  """A SavedModel's ``__call__`` as a trainable backbone with ResNetV2's output contract.

  Call: images float ``[B,H,W,3]`` in ``[0,1]`` (passed unchanged: published BiT/REMEDIS hub
  modules take [0,1]); returns ``{"feature_map": [B,h,w,C], "pooled": [B,C]}``. A module
  that returns pooled features ``[B,C]`` gives ``feature_map = pooled[:, None, None, :]``.
  Persist with ``tf.train.Checkpoint`` (not ``.keras``: TFSMLayer needs safe_mode=False).
  """

  def __init__(self, path_or_handle: str, output_channels: Optional[int] = None,
               name: str = "savedmodel_backbone", **kwargs):
    super().__init__(name=name, **kwargs)
    self.handle = str(path_or_handle)
    self.variant = "savedmodel"
    path = resolve_handle(path_or_handle)
    try:
      self.module = keras.layers.TFSMLayer(path, call_endpoint="__call__", trainable=True,
                                           name="savedmodel")
    except (ValueError, OSError, tf.errors.OpError) as e:
      raise CheckpointError(f"could not wrap SavedModel {path}: {e}".replace("\n", " "))
    self._channels = output_channels or self._static_channels()

  def _static_channels(self) -> Optional[int]:
    fn = self.module.call_endpoint_fn
    for concrete in getattr(fn, "concrete_functions", []):
      outputs = tf.nest.flatten(concrete.structured_outputs)
      if outputs and outputs[0].shape.rank and outputs[0].shape[-1] is not None:
        return int(outputs[0].shape[-1])
    return None

  @property
  def output_channels(self) -> Optional[int]:
    """C, from the constructor, the module's output signature, or the first call."""
    return self._channels

  def call(self, images, training=None):
    out = self.module(ops.cast(images, "float32"))
    if isinstance(out, dict):
      if "feature_map" in out:
        out = out["feature_map"]
      elif len(out) == 1:
        out = next(iter(out.values()))
      else:
        raise CheckpointError(f"{self.handle}: __call__ returns several outputs "
                              f"{sorted(out)}, none named feature_map")
    rank = len(out.shape)
    if rank == 4:
      fmap = out
      pooled = ops.mean(fmap, axis=(1, 2))
    elif rank == 2:
      pooled = out
      fmap = pooled[:, None, None, :]
    else:
      raise CheckpointError(f"{self.handle}: expected a [B,h,w,C] or [B,C] output, got rank "
                            f"{rank}")
    if self._channels is None and out.shape[-1] is not None:
      self._channels = int(out.shape[-1])
    return {"feature_map": ops.cast(fmap, self.compute_dtype),
            "pooled": ops.cast(pooled, self.compute_dtype)}


@dataclasses.dataclass
class LoadedBackbone:
  """Result of :func:`load_backbone`.

  Attributes:
    model: a ResNetV2 (``how == "native"``) or a SavedModelBackbone.
    how: ``"native"`` (weights copied by BiT name) or ``"savedmodel_layer"`` (wrapped).
    report: the native load's LoadReport, else None.
    note: why the native path was not taken (empty when it was).
  """
  model: keras.Model
  how: str
  report: Optional[bit_npz.LoadReport] = None
  note: str = ""

  def __iter__(self):
    """Unpacks as ``model, how = load_backbone(...)``."""
    return iter((self.model, self.how))


def load_backbone(path_or_handle: str, variant: Optional[str] = None) -> LoadedBackbone:
  """Loads a backbone from a BiT ``.npz``, a SavedModel directory or a TF Hub handle.

  Native first: variables named like BiT go into a ``ResNetV2`` (``variant`` inferred from
  the shapes when None; the head, if any, is ignored). Otherwise the SavedModel is wrapped
  in :class:`SavedModelBackbone`. An explicit ``variant`` that does not match raises.
  """
  handle = str(path_or_handle)
  if handle.endswith(".npz"):
    arrays = bit_npz.read_npz(handle)
    name = variant or bit_npz.guess_variant({k: v.shape for k, v in arrays.items()})
    if name is None:
      raise CheckpointError(f"{handle}: shapes match no known variant; pass a variant")
    model = resnet_v2.ResNetV2(name).build_for(32)
    report = bit_npz.assign_bit_arrays(model, arrays, load_head=False, source=handle)
    return LoadedBackbone(model, "native", report)
  path = resolve_handle(handle)
  shapes = {}
  for var_name, shape, _ in inspect_savedmodel(path):
    key = bit_key_from_name(var_name)
    if key is not None and shape is not None:
      shapes[key] = shape
  if shapes:
    name = variant or bit_npz.guess_variant(shapes)
    if name is not None:
      model = resnet_v2.ResNetV2(name).build_for(32)
      report = load_savedmodel_into(model, path, load_head=False)
      return LoadedBackbone(model, "native", report)
    note = "BiT-like names but no known variant matches their shapes"
  else:
    note = "variable names do not follow BiT's"
  return LoadedBackbone(SavedModelBackbone(path), "savedmodel_layer", None, note)


def export_savedmodel(backbone: resnet_v2.ResNetV2, out_dir: str,
                      image_size: Optional[int] = None) -> str:
  """Writes ``backbone`` as a hub-style TF2 SavedModel like the published REMEDIS ones.

  ``hub.load(out_dir)(images)`` with float32 ``[B,H,W,3]`` in [0,1] returns the feature map
  ``[B,h,w,C]`` (float32); the ``serving_default`` signature returns ``{"feature_map",
  "pooled"}`` (+ ``"logits"`` with a head). The root exposes ``variables``,
  ``trainable_variables`` and ``regularization_losses`` so ``hub.KerasLayer`` and
  ``keras.layers.TFSMLayer`` can fine-tune it. tf.Variable names are BiT keys (head kernel in
  BiT's ``[1,1,C,K]`` layout). ``image_size`` fixes H = W in the signatures (None: any).
  Written to a temporary sibling and renamed into place; returns ``out_dir``.
  """
  bit_npz._ensure_built(backbone)  # pylint: disable=protected-access
  key_of = {id(v): k for k, v in backbone.bit_variable_map().items()}
  exported: Dict[str, tf.Variable] = {}
  for v in backbone.variables:
    if id(v) not in key_of:
      raise CheckpointError(f"cannot export {v.path}: no BiT key for it")
    key = key_of[id(v)]
    value = bit_npz.to_bit_layout(key, np.asarray(v.numpy(), np.float32))
    exported[key] = tf.Variable(value, trainable=v.trainable, name=key)

  def values(variables):
    out = []
    for v in variables:
      var = exported[key_of[id(v)]]
      out.append(tf.reshape(var, v.shape) if var.shape != tuple(v.shape) else var)
    return out

  def forward(images):
    outputs, _ = backbone.stateless_call(values(backbone.trainable_variables),
                                         values(backbone.non_trainable_variables),
                                         images, training=False)
    return {k: tf.cast(t, tf.float32) for k, t in outputs.items()}

  spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
  root = tf.__internal__.tracking.AutoTrackable()
  ordered = list(exported.values())
  root.variables = ordered
  root.trainable_variables = [v for v in ordered if v.trainable]
  root.regularization_losses = []

  @tf.function(input_signature=[spec])
  def call(images):
    return forward(images)["feature_map"]

  root.__call__ = call
  serve = tf.function(forward, input_signature=[spec])

  out_dir = out_dir.rstrip("/")
  if tf.io.gfile.exists(out_dir) and tf.io.gfile.listdir(out_dir) and not tf.io.gfile.exists(
      os.path.join(out_dir, "saved_model.pb")):
    raise CheckpointError(f"refusing to replace {out_dir}: it exists and is not a SavedModel")
  return io_utils.replace_dir_atomically(
      out_dir, lambda tmp: tf.saved_model.save(root, tmp,
                                               signatures={"serving_default": serve}))
