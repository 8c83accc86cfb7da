"""KerasHub presets of our models: writing, checked loading, Kaggle / Hugging Face handles.

A preset written here is KerasHub's own format (``Backbone.save_to_preset`` /
``Task.save_to_preset``), so ``keras_hub.models.Backbone.from_preset(dir)`` and, for a
classifier, ``keras_hub.models.ImageClassifier.from_preset(dir)`` load it after
``import remedis_tf``:

* ``config.json`` — the serialised :class:`~remedis_tf.weights.keras_hub_models.BiTBackbone`
  (``registered_name`` ``remedis_tf>BiTBackbone``, ``variant``, ``num_classes``);
  ``model.weights.h5`` — its weights;
* classifiers also ``task.json`` (the :class:`RemedisImageClassifier`: ``num_classes``,
  ``task``, ``label_names``, ``temperature``, ``calibration``, projection head),
  ``task.weights.h5`` (projection + classification heads), ``preprocessor.json`` and
  ``image_converter.json`` (``image_size``, ``crop_fraction``);
* ``metadata.json`` — KerasHub's (versions, parameter count, date) plus ours:
  ``format`` (:data:`FORMAT`), ``format_version`` (2), ``remedis_tf_version``,
  ``tensorflow_version``, ``source``, ``image_size``;
* ``README.md`` — the model card (:mod:`remedis_tf.weights.model_card`).

Publish one with ``keras_hub.upload_preset("kaggle://user/model/keras/variant", dir)`` or
``keras_hub.upload_preset("hf://user/model", dir)``. ``kaggle://`` / ``hf://`` handles are
fetched by KerasHub's own downloader (:func:`resolve_handle`); a failure (offline, no such
model) is one :class:`CheckpointError` line.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import tempfile
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import keras
import keras_hub
import tensorflow as tf
from keras_hub.src.utils import preset_utils  # KerasHub's downloader (no public name)

from remedis_tf import io_utils
from remedis_tf.data import augment as augment_lib
from remedis_tf.errors import CheckpointError
from remedis_tf.models import resnet_v2
from remedis_tf.models.classifier import Classifier
from remedis_tf.weights import bit_npz, h5_weights, model_card
from remedis_tf.weights.keras_hub_models import (BiTBackbone, RemedisImageClassifier,
                                                 RemedisImageClassifierPreprocessor,
                                                 RemedisImageConverter)

FORMAT = "remedis_tf.keras_hub"
FORMAT_VERSION = 2
HUB_SCHEMES = ("kaggle://", "hf://")
CONFIG_FILE = "config.json"
TASK_FILE = "task.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
TASK_WEIGHTS_FILE = "task.weights.h5"
PREPROCESSOR_FILE = "preprocessor.json"
CONVERTER_FILE = "image_converter.json"
CARD_FILE = "README.md"
OPTIONAL_FILES = (TASK_FILE, TASK_WEIGHTS_FILE, PREPROCESSOR_FILE, CONVERTER_FILE,
                  METADATA_FILE, CARD_FILE)


def is_hub_handle(path: str) -> bool:
  """True for a ``kaggle://`` or ``hf://`` preset handle."""
  return str(path).lower().startswith(HUB_SCHEMES)


def read_json_object(path: str) -> Dict[str, Any]:
  """The JSON object in ``path``; CheckpointError naming the file when it is unreadable or
  not an object."""
  try:
    obj = io_utils.read_json(path)
  except (ValueError, tf.errors.OpError) as e:
    raise CheckpointError(f"{path}: unreadable JSON ({e})".replace("\n", " ")) from None
  if not isinstance(obj, dict):
    raise CheckpointError(f"{path}: expected a JSON object")
  return obj


def is_keras_hub_preset(path: str) -> bool:
  """True when ``path`` (local or ``gs://``) holds a KerasHub ``config.json`` (one with a
  ``registered_name``) and ``model.weights.h5``; reads only ``config.json``."""
  config = os.path.join(str(path), CONFIG_FILE)
  if (not path or is_hub_handle(path) or not tf.io.gfile.exists(config)
      or not tf.io.gfile.exists(os.path.join(str(path), WEIGHTS_FILE))):
    return False
  try:
    return "registered_name" in read_json_object(config)
  except CheckpointError:
    return False


def resolve_handle(handle: str) -> str:
  """Downloads (or finds in KerasHub's cache) the files of a ``kaggle://`` / ``hf://``
  preset with KerasHub's own downloader; returns the local folder holding them.

  Raises:
    CheckpointError: one line, e.g. offline or no such model.
  """
  def fetch(name: str) -> str:
    return preset_utils.get_file(handle, name)

  try:
    folder = os.path.dirname(fetch(CONFIG_FILE))
    fetch(WEIGHTS_FILE)
    for name in OPTIONAL_FILES:
      try:
        fetch(name)
      except FileNotFoundError:
        pass
  except Exception as e:  # kagglehub / huggingface_hub raise many types; one line for all
    raise CheckpointError(f"could not fetch KerasHub preset {handle}: {type(e).__name__}: "
                          f"{e}".replace("\n", " ")) from None
  return folder


@contextlib.contextmanager
def local_preset(path: str) -> Iterator[str]:
  """A local folder with the preset's files: itself, a temporary copy of a ``gs://``
  folder, or KerasHub's cache for a ``kaggle://`` / ``hf://`` handle."""
  path = str(path).rstrip("/")
  if is_hub_handle(path):
    yield resolve_handle(path)
  elif "://" not in path:
    yield path
  else:
    with tempfile.TemporaryDirectory() as local:
      for name in tf.io.gfile.listdir(path):
        if not tf.io.gfile.isdir(os.path.join(path, name)):
          tf.io.gfile.copy(os.path.join(path, name), os.path.join(local, name))
      yield local


def _remedis_version() -> str:
  try:
    return importlib.metadata.version("remedis_tf")
  except importlib.metadata.PackageNotFoundError:
    return "unknown (not installed as a package)"


def _check_native(backbone: keras.Model) -> resnet_v2.ResNetV2:
  if not isinstance(backbone, resnet_v2.ResNetV2):
    raise CheckpointError(f"presets hold native ResNetV2 backbones, not "
                          f"{type(backbone).__name__}; convert the weights to a ResNetV2 first")
  if backbone.spec != resnet_v2.get_spec(backbone.variant):
    raise CheckpointError(f"backbone {backbone.variant} has a custom spec; presets hold named "
                          f"variants ({', '.join(sorted(resnet_v2.VARIANTS))})")
  return backbone


def backbone_from_resnet(resnet: resnet_v2.ResNetV2) -> BiTBackbone:
  """A :class:`BiTBackbone` holding a copy of ``resnet``'s weights (copied by BiT key)."""
  resnet = _check_native(resnet)
  if not resnet.built:
    resnet.build_for(32)
  backbone = BiTBackbone(resnet.variant, num_classes=resnet.num_classes)
  arrays = bit_npz.backbone_bit_arrays(resnet, include_head=bool(resnet.num_classes))
  bit_npz.assign_bit_arrays(backbone.resnet, arrays, load_head=bool(resnet.num_classes),
                            source=resnet.name)
  return backbone


def classifier_from_native(model: Classifier, image_size: Optional[int],
                           label_names: Optional[Sequence[str]], task: Optional[str],
                           crop_fraction: float = augment_lib.EVAL_CROP_FRACTION,
                           calibration: Optional[Mapping[str, Any]] = None
                           ) -> RemedisImageClassifier:
  """A :class:`RemedisImageClassifier` with a copy of a :class:`Classifier`'s weights and
  our eval transform (``image_size``, ``crop_fraction``) as its preprocessor."""
  from_layer = int(model.from_projection_layer)
  proj = model.projection_head
  temperature = None
  if calibration is not None and label_names:
    temperature = [float(calibration["temperature"][n]) for n in label_names]
  converter = RemedisImageConverter(image_size=int(image_size) if image_size else None,
                                    crop_fraction=crop_fraction)
  out = RemedisImageClassifier(
      backbone_from_resnet(model.backbone), int(model.classification_head.num_outputs),
      preprocessor=RemedisImageClassifierPreprocessor(converter), task=task,
      label_names=list(label_names) if label_names else None, temperature=temperature,
      calibration=None if calibration is None else dict(calibration),
      projection_head=None if proj is None else {
          "num_layers": proj.num_layers, "hidden_dim": proj.hidden_dim,
          "output_dim": proj.output_dim},
      from_projection_layer=from_layer)
  if not model.built:
    model.build_for(32)
  pairs = [(model.classification_head, out.classification_head)]
  if proj is not None:
    pairs.append((proj, out.projection_head))
  for src, dst in pairs:
    dst.set_weights(src.get_weights())
  return out


def native_view(loaded: keras.Model) -> keras.Model:
  """The ``ResNetV2`` (or :class:`Classifier` over the same layers) inside a loaded KerasHub
  model, for code that works on our own classes (BiT keys, checkpoints, export)."""
  if isinstance(loaded, RemedisImageClassifier):
    return Classifier(loaded.backbone.resnet, loaded.classification_head,
                      loaded.projection_head, loaded.from_projection_layer)
  if isinstance(loaded, BiTBackbone):
    return loaded.resnet
  raise CheckpointError(f"{type(loaded).__name__} is not a remedis_tf BiTBackbone or "
                        "RemedisImageClassifier")


def save_to_preset(model: keras.Model, preset_dir: str, image_size: Optional[int] = None,
                   label_names: Optional[Sequence[str]] = None, task: Optional[str] = None,
                   crop_fraction: Optional[float] = None, source: str = "",
                   temperature: Optional[Mapping[str, Any]] = None,
                   card: Optional[Mapping[str, Any]] = None) -> str:
  """Writes a ``ResNetV2`` or :class:`Classifier` (or their KerasHub forms) as a KerasHub
  preset folder (local or ``gs://``), with its model card; returns ``preset_dir``.

  For classifiers ``image_size``, ``label_names`` and ``task`` are recorded (a classifier
  without them is not evaluable: ``runs.classifier.load_model`` refuses it); ``temperature`` is the
  calibration record (None: T = 1); ``card`` adds to the model card (``metrics``,
  ``license``, ``data``, ``intended_use``, see :mod:`remedis_tf.weights.model_card`). An
  existing preset folder is replaced; any other non-empty folder is refused.
  """
  if isinstance(model, Classifier):
    _check_native(model.backbone)
    hub_model: keras.Model = classifier_from_native(
        model, image_size, label_names, task,
        augment_lib.EVAL_CROP_FRACTION if crop_fraction is None else float(crop_fraction),
        temperature)
  elif isinstance(model, (BiTBackbone, RemedisImageClassifier)):
    hub_model = model
  else:
    hub_model = backbone_from_resnet(model)
  preset_dir = str(preset_dir).rstrip("/")
  if (tf.io.gfile.isdir(preset_dir) and tf.io.gfile.listdir(preset_dir)
      and not tf.io.gfile.exists(os.path.join(preset_dir, CONFIG_FILE))):
    raise CheckpointError(f"{preset_dir} exists and is not a preset; refusing to replace it")
  extra = {"format": FORMAT, "format_version": FORMAT_VERSION,
           "remedis_tf_version": _remedis_version(), "tensorflow_version": tf.__version__,
           "source": source, "image_size": image_size,
           "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
               timespec="seconds")}

  def write(tmp_dir: str) -> None:
    tf.io.gfile.makedirs(tmp_dir)
    with tempfile.TemporaryDirectory() as local:
      hub_model.save_to_preset(local)
      meta_path = os.path.join(local, METADATA_FILE)
      with open(meta_path, encoding="utf-8") as f:
        metadata = {**json.load(f), **extra}
      with open(meta_path, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
      with open(os.path.join(local, CARD_FILE), "w", encoding="utf-8") as f:
        f.write(model_card.render(preset_info(local), dict(card or {})))
      for name in sorted(os.listdir(local)):
        if os.path.isfile(os.path.join(local, name)):
          tf.io.gfile.copy(os.path.join(local, name), os.path.join(tmp_dir, name),
                           overwrite=True)

  return io_utils.replace_dir_atomically(preset_dir, write)


def _load_checked(local: str, source: str) -> keras.Model:
  """Builds the model ``local`` describes, checks its weight files array by array, loads."""
  weights = os.path.join(local, WEIGHTS_FILE)
  if os.path.exists(os.path.join(local, TASK_FILE)):
    model = keras_hub.models.ImageClassifier.from_preset(local, load_weights=False)
    backbone = model.backbone
    task_weights = os.path.join(local, TASK_WEIGHTS_FILE)
    h5_weights.check_weights_file(model, task_weights, f"{source}/{TASK_WEIGHTS_FILE}",
                                  write=model.save_task_weights, config_file=TASK_FILE)
  else:
    model = backbone = keras_hub.models.Backbone.from_preset(local, load_weights=False)
  h5_weights.check_weights_file(backbone, weights, f"{source}/{WEIGHTS_FILE}")
  backbone.load_weights(weights)
  if model is not backbone:
    model.load_task_weights(task_weights)
  return model


def load_preset(path: str) -> keras.Model:
  """Loads a KerasHub preset of ours (local, ``gs://``, ``kaggle://`` or ``hf://``) as a
  :class:`BiTBackbone` or :class:`RemedisImageClassifier`, after checking every stored
  array against the rebuilt model.

  Raises:
    CheckpointError: unreachable handle, missing file, another KerasHub model, or weights
      that do not fit the config (each array named); one line.
  """
  path = str(path).rstrip("/")
  with local_preset(path) as local:
    if not os.path.exists(os.path.join(local, WEIGHTS_FILE)):
      raise CheckpointError(f"{path}/{WEIGHTS_FILE}: missing")
    try:
      model = _load_checked(local, path)
    except CheckpointError:
      raise
    except (ValueError, TypeError, KeyError, OSError) as e:
      raise CheckpointError(f"{path}: not a loadable remedis_tf KerasHub preset "
                            f"({type(e).__name__}: {e})".replace("\n", " ")[:600]) from None
  native_view(model)  # another KerasHub model is refused here
  return model


def preset_info(path: str) -> Dict[str, Any]:
  """The preset's description in the schema of :func:`remedis_tf.weights.preset.preset_info`
  (``class_name`` ``ResNetV2`` or ``Classifier``, ``backbone``, ``image_size``,
  ``label_names``, ``task``, ``crop_fraction``, ``temperature`` (calibration record),
  ``metadata``), read from the JSON files without building anything."""
  with local_preset(path) as local:
    def read(name: str) -> Optional[Dict[str, Any]]:
      full = os.path.join(local, name)
      return read_json_object(full) if tf.io.gfile.exists(full) else None

    config = read(CONFIG_FILE) or {}
    metadata = read(METADATA_FILE) or {}
    task = read(TASK_FILE)
  if config.get("registered_name") != "remedis_tf>BiTBackbone":
    raise CheckpointError(f"{path}/{CONFIG_FILE}: a {config.get('class_name')!r} KerasHub "
                          "preset, not a remedis_tf BiTBackbone")
  bb = config.get("config", {})
  info: Dict[str, Any] = {
      "format": FORMAT, "format_version": metadata.get("format_version", FORMAT_VERSION),
      "class_name": "ResNetV2",
      "backbone": {"variant": bb.get("variant"), "num_classes": int(bb.get("num_classes", 0))},
      "image_size": metadata.get("image_size"), "label_names": None, "task": None,
      "crop_fraction": None, "metadata": metadata}
  if task is not None:
    tc = task.get("config", {})
    converter = (((tc.get("preprocessor") or {}).get("config") or {}).get("image_converter")
                 or {}).get("config", {})
    size = converter.get("image_size")
    temps, labels = tc.get("temperature"), tc.get("label_names")
    record = tc.get("calibration")
    if record is None and temps is not None and labels:
      record = {"temperature": dict(zip(labels, temps))}
    info.update({
        "class_name": "Classifier", "label_names": labels, "task": tc.get("task"),
        "image_size": int(size[0]) if size else info["image_size"],
        "crop_fraction": converter.get("crop_fraction"), "temperature": record,
        "projection_head": tc.get("projection_head"),
        "from_projection_layer": int(tc.get("from_projection_layer") or 0),
        "classification_head": {"num_outputs": tc.get("num_classes")}})
  return info
