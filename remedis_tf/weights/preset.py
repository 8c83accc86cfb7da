"""Keras-3 presets of our models, in two formats:

* **KerasHub presets** (written since format version 2): the format of
  :mod:`remedis_tf.weights.keras_hub_presets`, which ``keras_hub.models.Backbone.from_preset``
  and ``keras_hub.models.ImageClassifier.from_preset`` load after ``import remedis_tf``;
  :func:`save_to_preset` writes these. ``kaggle://`` / ``hf://`` handles are read too.
* **remedis_tf presets** (format version 1, written before KerasHub support; still read,
  and written by :func:`save_legacy_preset`): a folder with ``config.json`` (``format``
  ``remedis_tf.preset``, ``class_name`` ``ResNetV2`` or ``Classifier``, the backbone
  ``variant`` and BiT head size, the projection/classification head shapes, and for
  classifiers ``label_names``, ``task``, ``image_size`` and ``crop_fraction``),
  ``metadata.json`` (versions, ``source``, parameter count) and ``model.weights.h5`` (the
  built model's ``keras.Model.save_weights`` file).

:func:`from_preset` reads either (local, ``gs://``; KerasHub presets also from handles) and
returns our own classes (a ``ResNetV2`` or a :class:`Classifier`), after checking every
stored array's path and shape against the rebuilt model. All reads and writes go through
``tf.io.gfile``; HDF5 needs a local file, so remote weights are copied through a temporary
directory.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.errors import CheckpointError, ConfigError
from remedis_tf.models import resnet_v2
from remedis_tf.models.classifier import Classifier
from remedis_tf.models.heads import ClassificationHead, ProjectionHead
from remedis_tf.weights import bit_npz, differences, keras_hub_presets
from remedis_tf.weights.h5_weights import check_weights_file, h5_arrays

PRESET_FORMAT = "remedis_tf.preset"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
CLASS_NAMES = ("ResNetV2", "Classifier")
_BUILD_SIZE = 32  # variables do not depend on the image size; build on the smallest input


def is_preset(path: str) -> bool:
  """True for a ``kaggle://`` / ``hf://`` handle, and for a folder holding ``config.json``
  and ``model.weights.h5`` (either format)."""
  if keras_hub_presets.is_hub_handle(path):
    return True
  return bool(path) and all(tf.io.gfile.exists(os.path.join(path, name))
                            for name in (CONFIG_FILE, WEIGHTS_FILE))


def _remedis_version() -> str:
  try:
    return importlib.metadata.version("remedis_tf")
  except importlib.metadata.PackageNotFoundError:
    return "unknown (not installed as a package)"


def preset_config(model: keras.Model, image_size: Optional[int] = None,
                  label_names: Optional[Sequence[str]] = None, task: Optional[str] = None,
                  crop_fraction: Optional[float] = None) -> Dict[str, Any]:
  """The ``config.json`` contents that rebuild ``model`` (a ResNetV2 or a Classifier).

  Raises:
    CheckpointError: the model (or the classifier's backbone) is not a native ResNetV2 of a
      named variant (e.g. a wrapped SavedModel), so it cannot be rebuilt from a config.
  """
  backbone = model.backbone if isinstance(model, Classifier) else model
  if not isinstance(backbone, resnet_v2.ResNetV2):
    raise CheckpointError(f"presets hold native ResNetV2 backbones, not "
                          f"{type(backbone).__name__}; convert the weights to a ResNetV2 first")
  if backbone.spec != resnet_v2.get_spec(backbone.variant):
    raise CheckpointError(f"backbone {backbone.variant} has a custom spec; presets hold named "
                          f"variants ({', '.join(sorted(resnet_v2.VARIANTS))})")
  config: Dict[str, Any] = {
      "format": PRESET_FORMAT, "format_version": FORMAT_VERSION,
      "class_name": type(model).__name__ if isinstance(model, Classifier) else "ResNetV2",
      "backbone": {"variant": backbone.variant, "num_classes": int(backbone.num_classes)},
      "image_size": image_size, "label_names": list(label_names) if label_names else None,
      "task": task, "crop_fraction": crop_fraction,
  }
  if isinstance(model, Classifier):
    head = model.projection_head
    config["projection_head"] = None if head is None else {
        "num_layers": head.num_layers, "hidden_dim": head.hidden_dim,
        "output_dim": head.output_dim}
    config["from_projection_layer"] = int(model.from_projection_layer)
    config["classification_head"] = {"num_outputs": int(model.classification_head.num_outputs)}
  return config


def save_to_preset(model: keras.Model, preset_dir: str, image_size: Optional[int] = None,
                   label_names: Optional[Sequence[str]] = None, task: Optional[str] = None,
                   crop_fraction: Optional[float] = None, source: str = "",
                   temperature: Optional[Mapping[str, Any]] = None,
                   card: Optional[Mapping[str, Any]] = None) -> str:
  """Writes ``model`` (a ResNetV2 backbone or a :class:`Classifier`) as a KerasHub preset
  with its model card (:func:`remedis_tf.weights.keras_hub_presets.save_to_preset`; the
  arguments are those of :func:`save_legacy_preset`, plus ``card``). Returns ``preset_dir``.
  """
  return keras_hub_presets.save_to_preset(
      model, preset_dir, image_size=image_size, label_names=label_names, task=task,
      crop_fraction=crop_fraction, source=source, temperature=temperature, card=card)


def save_legacy_preset(model: keras.Model, preset_dir: str, image_size: Optional[int] = None,
                       label_names: Optional[Sequence[str]] = None, task: Optional[str] = None,
                       crop_fraction: Optional[float] = None, source: str = "",
                       temperature: Optional[Mapping[str, Any]] = None) -> str:
  """Writes ``model`` (a ResNetV2 backbone or a :class:`Classifier`) as a format-1
  remedis_tf preset folder (what :func:`save_to_preset` wrote before KerasHub support).

  Args:
    model: built or not (it is built on a 32x32 input when needed).
    preset_dir: local or ``gs://`` folder; an existing preset there is replaced, any other
      existing non-empty folder is refused.
    image_size, label_names, task, crop_fraction: stored in ``config.json`` (what a
      classifier was trained on; optional for backbones).
    source: provenance written to ``metadata.json`` (e.g. the converted input's path).
    temperature: a classifier's calibration record (``remedis_tf.eval.calibration``), stored
      in ``config.json`` so evaluation applies the same ``logits / T``; None: T = 1.
  Returns:
    ``preset_dir``.
  """
  config = preset_config(model, image_size, label_names, task, crop_fraction)
  if temperature is not None:
    config["temperature"] = dict(temperature)
  if not model.built:
    _build(model)
  if (tf.io.gfile.isdir(preset_dir) and tf.io.gfile.listdir(preset_dir)
      and not is_preset(preset_dir)):
    raise CheckpointError(f"{preset_dir} exists and is not a preset; refusing to replace it")
  metadata = {
      "format": PRESET_FORMAT, "format_version": FORMAT_VERSION,
      "remedis_tf_version": _remedis_version(), "keras_version": keras.__version__,
      "tensorflow_version": tf.__version__, "source": source,
      "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "parameter_count": resnet_v2.count_params(model),
  }

  def write(tmp_dir: str) -> None:
    tf.io.gfile.makedirs(tmp_dir)
    with tempfile.TemporaryDirectory() as local:
      weights = os.path.join(local, WEIGHTS_FILE)
      model.save_weights(weights)
      tf.io.gfile.copy(weights, os.path.join(tmp_dir, WEIGHTS_FILE), overwrite=True)
    io_utils.atomic_write_json(os.path.join(tmp_dir, CONFIG_FILE), config)
    io_utils.atomic_write_json(os.path.join(tmp_dir, METADATA_FILE), metadata)

  return io_utils.replace_dir_atomically(str(preset_dir).rstrip("/"), write)


def _read_json(path: str) -> Dict[str, Any]:
  if not tf.io.gfile.exists(path):
    raise CheckpointError(f"{path}: missing (a preset folder holds {CONFIG_FILE}, "
                          f"{METADATA_FILE} and {WEIGHTS_FILE})")
  return keras_hub_presets.read_json_object(path)


def read_preset(preset_dir: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Reads and checks ``(config, metadata)`` of a preset folder.

  Raises:
    CheckpointError: a file is missing or unreadable, written by another tool or a newer
      format version, or ``config.json`` lacks a field (each named with the file).
  """
  config_path = os.path.join(preset_dir, CONFIG_FILE)
  config = _read_json(config_path)
  metadata = _read_json(os.path.join(preset_dir, METADATA_FILE))
  for path, obj in ((config_path, config),
                    (os.path.join(preset_dir, METADATA_FILE), metadata)):
    if obj.get("format") != PRESET_FORMAT:
      raise CheckpointError(f"{path}: format is {obj.get('format')!r}, expected "
                            f"{PRESET_FORMAT!r}")
    version = obj.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
      raise CheckpointError(f"{path}: format_version {version!r} is not supported (this "
                            f"remedis_tf reads 1..{FORMAT_VERSION})")
  if config.get("class_name") not in CLASS_NAMES:
    raise CheckpointError(f"{config_path}: class_name {config.get('class_name')!r} is not one "
                          f"of {', '.join(CLASS_NAMES)}")
  variant = (config.get("backbone") or {}).get("variant")
  if not isinstance(variant, str):
    raise CheckpointError(f"{config_path}: missing backbone.variant")
  try:
    resnet_v2.get_spec(variant)
  except ConfigError as e:
    raise CheckpointError(f"{config_path}: {e}") from None
  if config["class_name"] == "Classifier" and not (config.get("classification_head") or {}
                                                   ).get("num_outputs"):
    raise CheckpointError(f"{config_path}: a Classifier needs classification_head.num_outputs")
  return config, metadata


def build_from_config(config: Dict[str, Any]) -> keras.Model:
  """Builds the (randomly initialised) model a preset ``config.json`` describes."""
  bb = config["backbone"]
  backbone = resnet_v2.ResNetV2(bb["variant"], num_classes=int(bb.get("num_classes") or 0))
  if config["class_name"] == "ResNetV2":
    return backbone.build_for(_BUILD_SIZE)
  proj_cfg = config.get("projection_head")
  projection = (ProjectionHead(int(proj_cfg["num_layers"]), int(proj_cfg["hidden_dim"]),
                               int(proj_cfg["output_dim"]), name="projection_head")
                if proj_cfg else None)
  head = ClassificationHead(int(config["classification_head"]["num_outputs"]),
                            name="classification_head")
  model = Classifier(backbone, head, projection, int(config.get("from_projection_layer") or 0))
  return model.build_for(_BUILD_SIZE)


def _build(model: keras.Model) -> None:
  if isinstance(model, (Classifier, resnet_v2.ResNetV2)):
    model.build_for(_BUILD_SIZE)


@contextlib.contextmanager
def _local_file(path: str) -> Iterator[str]:
  """``path`` itself when local, else a temporary local copy (HDF5 needs a real file)."""
  if "://" not in path:
    yield path
    return
  with tempfile.TemporaryDirectory() as local:
    copy = os.path.join(local, os.path.basename(path))
    tf.io.gfile.copy(path, copy, overwrite=True)
    yield copy


def is_keras_hub(path: str) -> bool:
  """True for a KerasHub preset (folder or ``kaggle://`` / ``hf://`` handle)."""
  return (keras_hub_presets.is_hub_handle(path)
          or keras_hub_presets.is_keras_hub_preset(str(path).rstrip("/")))


def inspect_preset(preset_dir: str) -> List[Tuple[str, Tuple[int, ...], str]]:
  """``(array path, shape, dtype)`` of a preset's ``model.weights.h5`` (and, for a KerasHub
  classifier, ``task.weights.h5``, its paths prefixed ``task.weights.h5:``), building
  nothing."""
  preset_dir = str(preset_dir).rstrip("/")
  if is_keras_hub(preset_dir):
    out = []
    with keras_hub_presets.local_preset(preset_dir) as local:
      for name, prefix in ((WEIGHTS_FILE, ""), (keras_hub_presets.TASK_WEIGHTS_FILE,
                                                 keras_hub_presets.TASK_WEIGHTS_FILE + ":")):
        if os.path.exists(os.path.join(local, name)):
          out += [(prefix + p, shape, dtype)
                  for p, shape, dtype in h5_arrays(os.path.join(local, name))]
    return out
  read_preset(preset_dir)
  with _local_file(os.path.join(preset_dir, WEIGHTS_FILE)) as local:
    return h5_arrays(local)


def from_preset(preset_dir: str) -> keras.Model:
  """Rebuilds and loads the model of a preset of either format (local or ``gs://``; a
  KerasHub preset also as a ``kaggle://`` / ``hf://`` handle).

  Returns a built :class:`~remedis_tf.models.resnet_v2.ResNetV2` or :class:`Classifier`
  whose weights equal the saved ones bit for bit (for a KerasHub preset: the layers inside
  the loaded ``BiTBackbone`` / ``RemedisImageClassifier``, see
  :func:`remedis_tf.weights.keras_hub_presets.native_view`).
  Raises:
    CheckpointError: a missing/unreadable preset file, or weights that do not match the
      config (each array named with expected vs found shape); nothing is half-loaded into
      a model the caller holds.
  """
  preset_dir = str(preset_dir).rstrip("/")
  if is_keras_hub(preset_dir):
    return keras_hub_presets.native_view(keras_hub_presets.load_preset(preset_dir))
  config, _ = read_preset(preset_dir)
  weights = os.path.join(preset_dir, WEIGHTS_FILE)
  if not tf.io.gfile.exists(weights):
    raise CheckpointError(f"{weights}: missing (a preset folder holds {CONFIG_FILE}, "
                          f"{METADATA_FILE} and {WEIGHTS_FILE})")
  model = build_from_config(config)
  with _local_file(weights) as local:
    check_weights_file(model, local, weights)
    try:
      model.load_weights(local)
    except (ValueError, OSError) as e:
      raise CheckpointError(f"{weights}: could not load ({e})".replace("\n", " ")) from None
  return model


def preset_info(preset_dir: str) -> Dict[str, Any]:
  """``config.json`` and ``metadata.json`` of a preset, merged as ``{**config, "metadata": …}``
  (a KerasHub preset is described in the same schema, see
  :func:`remedis_tf.weights.keras_hub_presets.preset_info`)."""
  if is_keras_hub(preset_dir):
    return keras_hub_presets.preset_info(str(preset_dir).rstrip("/"))
  config, metadata = read_preset(str(preset_dir).rstrip("/"))
  return {**config, "metadata": metadata}


def copy_backbone(loaded: keras.Model, backbone: resnet_v2.ResNetV2,
                  load_head: bit_npz.LoadHead = False, source: str = "preset"
                  ) -> bit_npz.LoadReport:
  """Copies the backbone of a model from :func:`from_preset` into ``backbone``.

  Goes through BiT keys, so it is all-or-nothing and a mismatch (e.g. another variant)
  names each BiT key with expected vs found shape.
  """
  src = loaded.backbone if isinstance(loaded, Classifier) else loaded
  arrays = bit_npz.backbone_bit_arrays(src, include_head=load_head is not False)
  return bit_npz.assign_bit_arrays(backbone, arrays, load_head=load_head, source=source)


def copy_projection_head(loaded: keras.Model, projection_head: ProjectionHead,
                         source: str = "preset") -> int:
  """Copies a classifier preset's projection head into ``projection_head``; returns the
  number of variables copied.

  Raises:
    CheckpointError: the preset has no projection head, or its variables differ in number
      or shape (each named with expected vs found shape); nothing is assigned then.
  """
  src = getattr(loaded, "projection_head", None)
  if src is None:
    raise CheckpointError(f"{source} holds no projection head (only classifier presets "
                          "fine-tuned from a projection layer have one)")
  if not projection_head.built:
    raise ValueError("build the projection head before copying into it")
  ours, theirs = projection_head.weights, src.weights
  expected = {i: tuple(v.shape) for i, v in enumerate(ours)}
  found = {i: tuple(v.shape) for i, v in enumerate(theirs)}
  missing = [i for i in expected if i not in found]
  unexpected = [i for i in found if i not in expected]
  mismatched = [i for i in expected if i in found and expected[i] != found[i]]
  if missing or unexpected or mismatched:
    described = differences.describe_differences(
        missing, unexpected, mismatched, expected, found, noun=" variable(s)",
        name=lambda i: ours[i].path if i < len(ours) else f"variable #{i}")
    raise CheckpointError(f"{source}: projection head does not match: {described}")
  for target, value in zip(ours, theirs):
    target.assign(value)
  return len(expected)
