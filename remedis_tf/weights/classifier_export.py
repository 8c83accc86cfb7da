"""Trained classifiers on disk: the self-describing classifier SavedModel, and loading a
classifier SavedModel or Keras classifier preset back as a forward function.

A classifier SavedModel (:func:`write_classifier_savedmodel`) is a ``tf.Module``. Who
crops and resizes:

* ``serving_default`` (also the attribute ``serve``, the endpoint ``keras.layers.TFSMLayer``
  calls by default), ``__call__``, ``embed`` and ``logits`` take images **the caller has
  already prepared** as evaluation does: float32 ``[B,S,S,3]`` RGB in [0,1], centre-cropped
  to ``crop_fraction`` of the shorter side and resized (bicubic) to ``S = image_size``
  (both in the sidecar). Other sizes run (the network is convolutional, any H, W >= 32)
  but are not what the model was evaluated on.
* ``serving_any_size`` (and the attribute ``preprocess``) does that itself: float32
  ``[B,H,W,3]`` RGB in [0,1] of any size, pre-shrunk as the decoders do (area resampling
  to a longest side of ``max(4·S, 1024)``), centre-cropped and resized exactly like
  ``evaluate`` (:func:`remedis_tf.data.augment.eval_transform`), then classified.

``__call__`` maps images to probabilities ``[B,K]`` (sigmoid for multi-label/binary,
softmax for multi-class, of ``logits / temperature``), ``embed`` to ``[B,C]``, ``logits``
to raw logits ``[B,K]``; the variable ``temperature`` is ``[K]``; both signatures return
``{"probabilities", "embedding", "logits"}``. A JSON sidecar (:data:`SIDECAR_FILE`)
inside the directory records label names, task, image size, eval crop, the input each
endpoint expects and the temperature record. A classifier preset is a
:mod:`remedis_tf.weights.preset` folder of a :class:`remedis_tf.models.classifier.Classifier`
whose config records label names, task and image size.

Everything here works on a model function and its metadata, never on a training task:
``remedis_tf.runs.classifier`` passes those from a trained ``SupervisedTask``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.data import augment as augment_lib
from remedis_tf.data import decode
from remedis_tf.errors import CheckpointError, ConfigError
from remedis_tf.eval import calibration as calibration_lib
from remedis_tf.models.classifier import scoring_forward
from remedis_tf.models.heads import ClassificationHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.weights import bit_npz
from remedis_tf.weights import checkpoint_io
from remedis_tf.weights import preset as preset_lib

SIDECAR_FILE = "remedis_classifier.json"
SIDECAR_FORMAT = "remedis_tf.classifier_savedmodel"

# images [B,H,W,3] -> {"logits": [B,K], "embedding": [B,C]} (any float dtype).
ModelFn = Callable[[tf.Tensor], Dict[str, tf.Tensor]]
# images [B,H,W,3] -> {"scores", "logits", "embedding"}, all float32.
Forward = Callable[[tf.Tensor], Dict[str, tf.Tensor]]


@dataclasses.dataclass
class StoredClassifier:
  """A classifier read back from a SavedModel or preset.

  Attributes:
    forward: ``images [B,S,S,3] in [0,1] -> {"scores", "logits", "embedding"}`` float32.
    label_names: K output names, in output order.
    task: ``multilabel`` | ``binary`` | ``multiclass``.
    image_size: training image side.
    crop_fraction: evaluation centre crop recorded with it (``EVAL_CROP_FRACTION`` when
      none is recorded).
    temperature: the calibration record its scores use (None: T = 1).
    info: the sidecar (SavedModel) or preset info it was read from.
  """
  forward: Forward
  label_names: Tuple[str, ...]
  task: str
  image_size: int
  crop_fraction: float
  temperature: Optional[Dict[str, Any]]
  info: Dict[str, Any]


def is_classifier_savedmodel(path: str) -> bool:
  """True when ``path`` is a directory written by :func:`write_classifier_savedmodel`."""
  return (tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))
          and tf.io.gfile.exists(os.path.join(path, SIDECAR_FILE)))


def variables_prefix(path: str) -> str:
  """The checkpoint prefix of a SavedModel's variables (``<path>/variables/variables``)."""
  return os.path.join(path.rstrip("/"), "variables", "variables")


def exported_parts(path: str) -> Tuple[str, ...]:
  """The model parts a classifier SavedModel of ours holds, read from its variables.

  Returns the present ones of ``backbone``, ``projection_head``, ``classification_head``
  when the SavedModel's object graph has at least a backbone and a classification head
  (our export, even with its sidecar lost); ``()`` for any other SavedModel. Nothing is
  loaded or run: only the variables' index is read.
  """
  prefix = variables_prefix(path)
  if not tf.io.gfile.exists(prefix + ".index"):
    return ()
  top = checkpoint_io.CheckpointGraph(prefix).top_level()
  if "backbone" not in top or "classification_head" not in top:
    return ()
  return tuple(n for n in ("backbone", "projection_head", "classification_head") if n in top)


def head_shape(path: str) -> Optional[Tuple[int, ...]]:
  """Shape ``[C, K]`` of the exported classification head's kernel (None if not found)."""
  graph = checkpoint_io.CheckpointGraph(variables_prefix(path))
  for var_path, shape in graph.variables_under(("classification_head",)).items():
    if var_path[-1] in ("kernel", "_kernel") and len(shape) == 2:
      return tuple(shape)
  return None


def head_refusal(source: str, from_projection_layer: int) -> Optional[str]:
  """Why the classification head of ``source`` cannot be carried as a BiT head (it reads
  projection layer ``from_projection_layer``, < 0: an unknown one, not the backbone's pooled
  features); None when it can (``from_projection_layer == 0``)."""
  if not from_projection_layer:
    return None
  layer = ("a projection layer" if from_projection_layer < 0
           else f"projection layer {from_projection_layer}")
  return (f"--with_head: the classification head of {source} reads {layer}, not the "
          "backbone's pooled features, so a BiT-layout "
          "head cannot carry it; convert without --with_head (backbone only) or use the "
          "classifier itself")


def backbone_with_head(backbone: ResNetV2, head: ClassificationHead, source: str) -> ResNetV2:
  """A new ResNetV2 of ``backbone``'s variant and weights whose BiT head holds ``head``
  (``logits = pooled @ kernel + bias``, what ``head`` computes on pooled features)."""
  arrays = bit_npz.backbone_bit_arrays(backbone, False)
  kernel = np.asarray(head.dense.kernel.numpy(), np.float32)
  arrays[bit_npz.HEAD_KERNEL] = kernel.reshape((1, 1) + kernel.shape)
  arrays[bit_npz.HEAD_BIAS] = np.asarray(head.dense.bias.numpy(), np.float32)
  model = ResNetV2(backbone.variant, num_classes=int(kernel.shape[1])).build_for(32)
  bit_npz.assign_bit_arrays(model, arrays, load_head=True, source=source)
  return model


def load_exported_backbone(path: str, variant: Optional[str] = None,
                           with_head: bool = False) -> ResNetV2:
  """The native backbone of our classifier SavedModel ``path``, with its classification head
  as BiT head when ``with_head`` (ConfigError when the head reads a projection layer).

  ``variant`` defaults to the sidecar's; it must match it. Only the variables are read
  (through the SavedModel's checkpoint), nothing is run.
  """
  parts = exported_parts(path)
  if not parts:
    raise CheckpointError(f"{path} is not a remedis_tf classifier SavedModel (no backbone and "
                          "classification_head variables)")
  info = read_sidecar(path) if is_classifier_savedmodel(path) else {}
  exported = info.get("variant")
  if exported and variant and variant != exported:
    raise ConfigError(f"{path} holds a {exported} backbone but the variant is {variant}; "
                      f"pass --variant={exported}")
  variant = variant or exported
  if not variant:
    raise ConfigError(f"{path}: a classifier SavedModel without its {SIDECAR_FILE}; give the "
                      "backbone variant (--variant)")
  backbone = ResNetV2(variant).build_for(32)
  checkpoint_io.restore_items(variables_prefix(path), backbone=backbone)
  if not with_head:
    return backbone
  layer = int(info.get("from_projection_layer", 1 if "projection_head" in parts else 0))
  refusal = head_refusal(path, layer)
  if refusal:
    raise ConfigError(refusal)
  shape = head_shape(path)
  head = ClassificationHead(int(shape[1]), name="classification_head")
  head(tf.zeros((1, int(shape[0]))))
  checkpoint_io.restore_items(variables_prefix(path), classification_head=head)
  return backbone_with_head(backbone, head, path)


def read_sidecar(path: str) -> Dict[str, Any]:
  """The JSON sidecar of a classifier SavedModel (CheckpointError when it is not one)."""
  sidecar = os.path.join(path, SIDECAR_FILE)
  try:
    info = io_utils.read_json(sidecar)
  except (tf.errors.OpError, ValueError) as e:
    raise CheckpointError(f"{sidecar}: unreadable classifier sidecar ({e})") from None
  if info.get("format") != SIDECAR_FORMAT:
    raise CheckpointError(f"{sidecar}: format is {info.get('format')!r}, expected "
                          f"{SIDECAR_FORMAT!r}")
  return info


def load_classifier_savedmodel(path: str) -> StoredClassifier:
  """Reads a classifier SavedModel (:func:`is_classifier_savedmodel` must hold)."""
  info = read_sidecar(path)
  module = tf.saved_model.load(path)

  def forward(images):
    images = tf.cast(images, tf.float32)
    out = {"scores": module(images), "embedding": module.embed(images)}
    if hasattr(module, "logits"):  # every export has them; kept optional for old ones
      out["logits"] = module.logits(images)
    return out

  return StoredClassifier(forward, tuple(info["label_names"]), info["task"],
                          int(info["image_size"]),
                          float(info.get("crop_fraction", augment_lib.EVAL_CROP_FRACTION)),
                          info.get("temperature"), info)


def load_classifier_preset(path: str) -> StoredClassifier:
  """Reads a classifier Keras preset (ConfigError for a backbone preset)."""
  info = preset_lib.preset_info(path)
  if info["class_name"] != "Classifier" or not info.get("label_names") or not info.get("task"):
    raise ConfigError(f"{path} is a {info['class_name']} preset without label names/task (a "
                      "backbone, not a classifier); evaluate a classifier preset written by "
                      "export_classifier_preset")
  model = preset_lib.from_preset(path)
  record = info.get("temperature")
  temperature = tf.constant(calibration_lib.temperature_vector(record, info["label_names"]))
  forward = scoring_forward(lambda images: model(tf.cast(images, tf.float32), training=False),
                            info["task"], temperature)
  if not info.get("image_size"):
    raise ConfigError(f"{path}/{preset_lib.CONFIG_FILE}: a classifier preset needs image_size")
  return StoredClassifier(forward, tuple(info["label_names"]), info["task"],
                          int(info["image_size"]),
                          float(info.get("crop_fraction") or augment_lib.EVAL_CROP_FRACTION),
                          record, info)


class _ClassifierModule(tf.Module):
  """Holds the inference layers so ``tf.saved_model.save`` tracks their variables."""

  def __init__(self, layers: Mapping[str, tf.Module]):
    super().__init__(name="remedis_classifier")
    for name, layer in layers.items():
      setattr(self, name, layer)


def write_classifier_savedmodel(model_fn: ModelFn, layers: Mapping[str, tf.Module],
                                out_dir: str, *, label_names: Sequence[str], task: str,
                                image_size: int, variant: str, from_projection_layer: int = 0,
                                crop_fraction: float = augment_lib.EVAL_CROP_FRACTION,
                                temperature: Optional[Mapping[str, Any]] = None,
                                source: str = "") -> str:
  """Writes a classifier as a self-describing SavedModel (see the module docstring).

  Args:
    model_fn: ``images -> {"logits": [B,K], "embedding": [B,C]}`` in inference mode.
    layers: ``{attribute name: layer}`` holding every variable ``model_fn`` reads (e.g.
      ``backbone``, ``classification_head``, ``projection_head``); they become
      attributes of the saved module.
    out_dir: output directory (local or ``gs://``).
    label_names, task, image_size, variant, from_projection_layer: recorded in the sidecar.
    crop_fraction: the evaluation centre crop the model expects (recorded).
    temperature: calibration record (:mod:`remedis_tf.eval.calibration`; None → T = 1).
    source: provenance note (e.g. the run directory).

  ``serving_default`` / ``serve`` expect images already cropped and resized to
  ``image_size``; ``serving_any_size`` does evaluation's crop and resize itself (module
  docstring). Written into a temporary sibling and renamed into place; an existing
  directory that is not a classifier SavedModel is never replaced. Returns ``out_dir``.
  """
  module = _ClassifierModule(layers)
  record = None if temperature is None else dict(temperature)
  module.temperature = tf.Variable(calibration_lib.temperature_vector(record, label_names),
                                   trainable=False, name="temperature")
  spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
  forward = scoring_forward(model_fn, task, module.temperature)

  def logits_fn(images):
    return tf.cast(model_fn(images)["logits"], tf.float32)

  module.__call__ = tf.function(lambda images: forward(images)["scores"], input_signature=[spec])
  module.embed = tf.function(lambda images: forward(images)["embedding"],
                             input_signature=[spec])
  module.logits = tf.function(logits_fn, input_signature=[spec])
  size, crop = int(image_size), float(crop_fraction)

  def outputs(images):
    out = forward(images)  # one pass gives all three
    return {"probabilities": out["scores"], "embedding": out["embedding"],
            "logits": out["logits"]}

  @tf.function(input_signature=[spec])
  def serve(images):
    """Classifies images the caller has already centre-cropped and resized.

    Args:
      images: float32 ``[B, S, S, 3]`` RGB in [0, 1], S = the sidecar's ``image_size``,
        centre-cropped to its ``crop_fraction`` of the shorter side and resized (bicubic),
        as evaluation prepares them. Use ``serving_any_size`` for uncropped images.
    Returns:
      ``probabilities`` ``[B, K]`` (of logits / temperature), ``embedding`` ``[B, C]``,
      ``logits`` ``[B, K]`` (raw).
    """
    return outputs(images)

  @tf.function(input_signature=[spec])
  def preprocess(images):
    """Evaluation's transform: float32 ``[B, H, W, 3]`` in [0, 1], any size → the
    decoders' pre-shrink (longest side ≤ max(4·S, 1024), area), centre crop of
    ``crop_fraction``, bicubic resize to ``[B, S, S, 3]``."""
    return augment_lib.eval_transform(images, size, crop)

  @tf.function(input_signature=[spec])
  def serve_any_size(images):
    """Crops, resizes and classifies images of any size, exactly as ``evaluate`` does.

    Args:
      images: float32 ``[B, H, W, 3]`` RGB in [0, 1], any H, W (one size per batch).
    Returns:
      as ``serving_default``.
    """
    return outputs(augment_lib.eval_transform(images, size, crop))

  module.serve = serve
  module.preprocess = preprocess

  sidecar = {
      "format": SIDECAR_FORMAT, "version": 1,
      "label_names": list(label_names), "task": task,
      "image_size": size, "crop_fraction": crop,
      "input": (f"float32 [B,{size},{size},3] RGB in [0,1], already centre-cropped to "
                f"crop_fraction {crop:g} of the shorter side and resized (bicubic) to "
                f"image_size {size} by the caller; serving_any_size takes any-size images "
                "and does this itself"),
      "signatures": {
          "serving_default": (f"images float32 [B,{size},{size},3] in [0,1], cropped and "
                              "resized by the caller -> probabilities, embedding, logits"),
          "serving_any_size": ("images float32 [B,H,W,3] in [0,1], any size: pre-shrink to "
                               f"a longest side of {decode.working_size(size)} (area), "
                               f"centre crop {crop:g}, bicubic resize to {size} inside, as "
                               "evaluate does -> probabilities, embedding, logits")},
      "keras": ("keras.layers.TFSMLayer(path) calls 'serve' (= serving_default); "
                "call_endpoint='serving_any_size' for any-size images"),
      "outputs": {"__call__": "probabilities [B,K] of logits / temperature",
                  "embed": "features [B,C]", "logits": "raw logits [B,K]",
                  "preprocess": f"evaluation transform [B,H,W,3] -> [B,{size},{size},3]"},
      "temperature": record,
      "variant": variant,
      "from_projection_layer": int(from_projection_layer),
      "source": source,
  }
  out_dir = out_dir.rstrip("/")
  if (tf.io.gfile.exists(out_dir) and tf.io.gfile.listdir(out_dir)
      and not is_classifier_savedmodel(out_dir)):
    raise CheckpointError(f"refusing to replace {out_dir}: it exists and is not a classifier "
                          "SavedModel")

  def write(tmp: str) -> None:
    tf.saved_model.save(module, tmp, signatures={"serving_default": serve,
                                                 "serving_any_size": serve_any_size})
    io_utils.atomic_write_json(os.path.join(tmp, SIDECAR_FILE), sidecar)

  return io_utils.replace_dir_atomically(out_dir, write)
