"""Where a fresh run's weights come from: BiT ``.npz``, timm, a preset, SavedModel / TF Hub,
or our checkpoint.

``init`` strings:
  * ``""`` — random initialisation;
  * ``*.npz`` — a BiT weight file (e.g. ``BiT-M-R50x1.npz``);
  * ``*.safetensors`` / ``*.pth`` — a timm ``resnetv2_*_bit`` state dict (``.pth`` needs torch);
  * a preset folder (``config.json`` + ``model.weights.h5``; KerasHub or the older
    remedis_tf format, see ``remedis_tf.weights.preset``) of a backbone or a classifier (its
    backbone is used), or a ``kaggle://`` / ``hf://`` KerasHub preset handle;
  * a SavedModel directory (has ``saved_model.pb``), ``gs://`` SavedModel, or a TF Hub handle
    (``https://tfhub.dev/...``, ``https://www.kaggle.com/models/...``);
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
from remedis_tf.weights import (bit_npz, checkpoint_io, keras_hub_presets, preset, savedmodel,
                                timm_bit)

INIT_KINDS = ("none", "npz", "timm", "preset", "savedmodel", "checkpoint")


def init_kind(init: str) -> str:
  """Classifies an init string into one of INIT_KINDS (no file is read beyond a stat)."""
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
  if kind == "savedmodel":
    backbone, how = savedmodel.load_backbone(init, variant=variant or None)
    return backbone, [f"backbone from SavedModel {init} ({how})"]
  return ResNetV2(variant).build_for(image_size), []


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
