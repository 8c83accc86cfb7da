"""Where a fresh run's weights come from: BiT ``.npz``, timm, a preset, SavedModel / TF Hub,
or our checkpoint.

``init`` strings:
  * ``""`` — random initialisation;
  * ``*.npz`` — a BiT weight file (e.g. ``BiT-M-R50x1.npz``);
  * ``*.safetensors`` / ``*.pth`` — a timm ``resnetv2_*_bit`` state dict (``.pth`` needs torch);
  * a preset folder (``config.json`` + ``model.weights.h5``; KerasHub or the older
    remedis_tf format, see ``remedis_tf.weights.preset``) of a backbone or a classifier (its
    backbone is used), or a ``kaggle://`` / ``hf://`` KerasHub preset handle;
  * a classifier SavedModel written by our ``export_classifier_savedmodel`` (recognised by
    its ``remedis_classifier.json`` sidecar or by its ``backbone`` + ``classification_head``
    variables): the native backbone of the variant it records is rebuilt and its weights
    (and projection head, when asked) are restored; its classification head is not used;
  * any other SavedModel directory (has ``saved_model.pb``), ``gs://`` SavedModel, or a TF Hub
    handle (``https://tfhub.dev/...``, ``https://www.kaggle.com/models/...``): loaded
    natively when its variables follow BiT's names, else wrapped whole, with a warning;
  * anything else — one of our checkpoints: a checkpoint prefix, a ``checkpoints/``
    directory, or a run directory.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import keras
import tensorflow as tf

from remedis_tf.errors import CheckpointError, ConfigError
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.weights import (bit_npz, checkpoint_io, classifier_export, keras_hub_presets,
                                preset, savedmodel,
                                timm_bit)

INIT_KINDS = ("none", "npz", "timm", "preset", "classifier_savedmodel", "savedmodel",
              "checkpoint")


def init_kind(init: str) -> str:
  """Classifies an init string into one of INIT_KINDS (no file is read beyond a stat and,
  for a SavedModel directory without our sidecar, its variables' index)."""
  if not init:
    return "none"
  if init.endswith(".npz"):
    return "npz"
  if keras_hub_presets.is_hub_handle(init):  # kaggle:// / hf://: fetched by KerasHub
    return "preset"
  if init.lower().endswith((timm_bit.SAFETENSORS_SUFFIX,) + timm_bit.TORCH_SUFFIXES):
    return "timm"
  if init.startswith(("http://", "https://")) or "tfhub.dev" in init:
    return "savedmodel"
  if tf.io.gfile.exists(os.path.join(init, "saved_model.pb")):
    if (classifier_export.is_classifier_savedmodel(init)
        or classifier_export.exported_parts(init)):
      return "classifier_savedmodel"
    return "savedmodel"
  if preset.is_preset(init):
    return "preset"
  return "checkpoint"


def build_backbone(variant: str, init: str = "", image_size: int = 64
                   ) -> Tuple[keras.Model, List[str]]:
  """Builds the backbone for ``variant``; SavedModel inits decide the backbone type here.

  Returns ``(backbone, notes)``. For a SavedModel whose variables follow BiT's names the
  result is a native ResNetV2 with those weights; otherwise a trainable SavedModel wrapper.
  An empty ``variant`` with a preset init takes the preset's variant; with a timm init, the
  variant its shapes match.
  """
  kind = init_kind(init)
  if kind == "preset" and not variant:
    variant = preset.preset_info(init)["backbone"]["variant"]
  if kind == "timm" and not variant:  # reads the file once more, only when no variant is given
    variant = timm_bit.guess_variant(timm_bit.read_state_dict(init))
    if variant is None:
      raise ConfigError(f"{init}: shapes match no known timm BiT model; give the variant")
  if kind == "classifier_savedmodel":
    variant = _exported_variant(init, variant)
    return ResNetV2(variant).build_for(image_size), [
        f"{init} is a remedis_tf classifier SavedModel: native {variant} backbone rebuilt"]
  if kind == "savedmodel":
    loaded = savedmodel.load_backbone(init, variant=variant or None)
    if loaded.how == "native":
      return loaded.model, [f"backbone from SavedModel {init} (native {loaded.model.variant}: "
                            f"{loaded.report})"]
    channels = loaded.model.output_channels
    return loaded.model, [
        f"WARNING: {init} could not be loaded as a BiT backbone ({loaded.note}); the whole "
        f"SavedModel is wrapped as an opaque backbone whose __call__ output "
        f"({channels or 'unknown'} channels) is trained on as features, and the variant "
        f"{variant or '(none)'} is ignored. If it is a classifier, its outputs are scores, "
        "not features: use a backbone (BiT .npz, preset or a run directory) instead"]
  return ResNetV2(variant).build_for(image_size), []


def _exported_variant(init: str, variant: str) -> str:
  """The backbone variant of our classifier SavedModel ``init`` (its sidecar's), checked
  against the requested ``variant``."""
  exported = (classifier_export.read_sidecar(init).get("variant")
              if classifier_export.is_classifier_savedmodel(init) else None)
  if exported and variant and variant != exported:
    raise ConfigError(f"--init {init} holds a {exported} backbone but the variant is "
                      f"{variant}; pass --variant={exported}")
  if not (variant or exported):
    raise ConfigError(f"--init {init}: a classifier SavedModel without its "
                      f"{classifier_export.SIDECAR_FILE}; give the backbone variant (--variant)")
  return variant or exported


def load_init(init: str, backbone: keras.Model, projection_head=None,
              restore_projection: bool = False) -> List[str]:
  """Loads ``init`` into an already built backbone (and projection head) for a fresh run.

  SavedModel inits were already applied by :func:`build_backbone`. Returns report lines,
  including which checkpoint items were not restored.
  """
  kind = init_kind(init)
  if kind == "none":
    return ["random initialisation (no --init given)"]
  if kind == "savedmodel":
    return [f"weights already loaded from SavedModel {init}"]
  if kind == "classifier_savedmodel":
    return _load_classifier_savedmodel(init, backbone, projection_head, restore_projection)
  if kind == "npz":
    report = bit_npz.load_bit_npz(backbone, init, load_head=False)
    return [f"backbone from BiT npz {init}: {report}"]
  if kind == "timm":
    report = timm_bit.load_timm_into(backbone, timm_bit.read_state_dict(init), load_head=False,
                                     source=init)
    return [f"backbone from timm state dict {init}: {report}"]
  if kind == "preset":
    loaded = preset.from_preset(init)
    report = preset.copy_backbone(loaded, backbone, source=init)
    notes = [f"backbone from preset {init}: {report}"]
    if restore_projection:
      if projection_head is None:
        raise ConfigError("restoring the projection head needs a model that has one")
      n = preset.copy_projection_head(loaded, projection_head, source=f"--init {init}")
      notes.append(f"projection head ({n} variables) from preset {init}")
    return notes
  items: Dict[str, object] = {"backbone": backbone}
  if restore_projection:
    if projection_head is None:
      raise ConfigError("restoring the projection head needs a model that has one")
    items["projection_head"] = projection_head
  report = checkpoint_io.restore_items(init, **items)
  missing = [name for name in items if name in report.absent]
  if missing:
    raise CheckpointError(f"--init {init}: checkpoint {report.path} has no "
                          f"{' or '.join(missing)} to restore")
  left_out = sorted(set(checkpoint_io.CheckpointGraph(report.path).top_level())
                    - set(report.restored))
  return [f"restored {', '.join(report.restored)} ({report.num_variables} variables) from "
          f"{report.path}; not restored: {', '.join(left_out) or 'nothing'}"]


def _load_classifier_savedmodel(init: str, backbone: keras.Model, projection_head,
                                restore_projection: bool) -> List[str]:
  """Restores backbone (and projection head) of our classifier SavedModel ``init``."""
  items: Dict[str, object] = {"backbone": backbone}
  if restore_projection:
    if projection_head is None:
      raise ConfigError("restoring the projection head needs a model that has one")
    items["projection_head"] = projection_head
  report = checkpoint_io.restore_items(classifier_export.variables_prefix(init), **items)
  missing = [name for name in items if name in report.absent]
  if missing:
    raise CheckpointError(f"--init {init}: the classifier SavedModel has no "
                          f"{' or '.join(missing)} to restore")
  shape = classifier_export.head_shape(init)
  head = (f"[{shape[0]}, {shape[1]}] ({shape[1]} outputs)" if shape else "")
  return [f"restored {', '.join(report.restored)} ({report.num_variables} variables) from "
          f"classifier SavedModel {init}; its classification head {head} is not used: this "
          "run trains a new head"]
