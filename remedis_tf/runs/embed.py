"""Exporting image embeddings (pooled backbone features) for downstream analysis.

Model sources (what ``model_source`` may be):

* a supervised (fine-tuning) run directory — the features its classification head reads
  (backbone pooled output, or projection layer k when it was fine-tuned from one); best
  checkpoint by default;
* a contrastive run directory (or one of our checkpoint prefixes / ``checkpoints/``
  folders with ``variant`` given) — the backbone's pooled output;
* a BiT ``.npz`` weight file (``variant`` guessed from the shapes when not given), a timm
  ``.safetensors`` state dict, or a backbone preset (its variant is recorded);
* a classifier preset (:func:`remedis_tf.runs.classifier.export_classifier_preset`) —
  the features its head reads, at its recorded image size;
* a SavedModel: a classifier exported by
  :func:`remedis_tf.runs.classifier.export_classifier_savedmodel` (its ``embed``), or a
  BiT/REMEDIS hub-style backbone (average-pooled feature map);
* a ``kaggle://`` / ``hf://`` KerasHub preset handle (fetched by KerasHub, then as above).

Output: one ``.npz`` or a folder of ``.npy`` files with ids, patients, embeddings, labels,
mask, label names and the model (format and reader: :mod:`remedis_tf.eval.embedding`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf import configs
from remedis_tf.data import augment as augment_lib
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import CheckpointError, ConfigError
from remedis_tf.eval import predict as predict_lib
from remedis_tf.eval.embedding import write_arrays
from remedis_tf.runs import classifier as classifier_lib
from remedis_tf.train import init_weights
from remedis_tf.weights import bit_npz, classifier_export, keras_hub_presets
from remedis_tf.weights import preset as preset_lib


def _feature_fn(backbone) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  def forward(images):
    return {"embedding": tf.cast(backbone(images, training=False)["pooled"], tf.float32)}
  return forward


def load_embedder(model_source: str, variant: Optional[str] = None,
                  image_size: Optional[int] = None, which: str = "best"
                  ) -> Tuple[Callable[[tf.Tensor], Dict[str, tf.Tensor]], int, str]:
  """Returns ``(forward, image_size, description)`` for ``model_source`` (see module doc).

  ``forward(images [B,S,S,3] in [0,1]) -> {"embedding": [B,C] float32}``. ``image_size``
  defaults to the training size recorded with the model; sources without one (``.npz``,
  hub SavedModels, bare checkpoints) need it.
  """
  if not model_source:
    raise ConfigError("no model given for the embeddings")
  if keras_hub_presets.is_hub_handle(model_source):  # kaggle:// / hf://: KerasHub fetches it
    model_source = keras_hub_presets.resolve_handle(model_source)
  if classifier_export.is_classifier_savedmodel(model_source):
    model = classifier_lib.load_model(model_source)
    return model.forward, image_size or model.image_size, f"classifier SavedModel {model_source}"
  if (preset_lib.is_preset(model_source)
      and preset_lib.preset_info(model_source)["class_name"] == "Classifier"):
    model = classifier_lib.load_model(model_source)
    return model.forward, image_size or model.image_size, f"classifier preset {model_source}"
  config_path = os.path.join(model_source, configs.RUN_CONFIG_FILE)
  run_config = (configs.read_run_config(model_source)
                if tf.io.gfile.exists(config_path) else None)
  if run_config is not None and "supervised" in run_config:
    model = classifier_lib.load_model(model_source, which)
    return model.forward, image_size or model.image_size, f"supervised run {model_source}"
  if run_config is not None and "contrastive" in run_config:
    variant = variant or run_config["contrastive"]["variant"]
    image_size = image_size or int((run_config.get("augment") or {}).get("image_size") or 0)
  kind = init_weights.init_kind(model_source)
  if kind == "checkpoint" and not variant:
    raise ConfigError(f"{model_source}: a checkpoint without a run config.json needs the "
                      "backbone variant (--variant)")
  if not image_size:
    raise ConfigError(f"{model_source}: no training image size is recorded with this model; "
                      "give the image size (--image_size)")
  if kind == "npz" and not variant:
    arrays = bit_npz.read_npz(model_source)
    variant = bit_npz.guess_variant({k: v.shape for k, v in arrays.items()})
    if variant is None:
      raise CheckpointError(f"{model_source}: shapes match no known variant; give --variant")
  backbone, notes = init_weights.build_backbone(variant or "", model_source, image_size)
  if kind != "savedmodel":
    notes += init_weights.load_init(model_source, backbone)
  return _feature_fn(backbone), int(image_size), "; ".join(notes) or model_source


def export_embeddings(model_source: str, manifest: Manifest, out_path: str,
                      image_size: Optional[int] = None, batch_size: int = 64,
                      variant: Optional[str] = None, which: str = "best",
                      crop_fraction: float = augment_lib.EVAL_CROP_FRACTION,
                      log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Embeds every image of ``manifest`` (evaluation preprocessing) and writes the arrays.

  Args:
    model_source: see the module docstring.
    manifest: images to embed (labels, if any, are copied alongside).
    out_path: ``*.npz`` file, or a directory for ``.npy`` files.
    image_size: input resolution (default: the model's training size).
    batch_size: images per forward pass.
    variant: backbone variant, for checkpoints/``.npz`` where it is not recorded.
    which: ``best`` or ``latest`` checkpoint of a supervised run.
    crop_fraction: evaluation centre crop before resizing.
    log: progress lines.

  Returns:
    ``{"out_path", "num_images", "dim", "image_size", "model"}``.
  """
  forward, size, description = load_embedder(model_source, variant, image_size, which)
  log(f"[embed] {len(manifest)} images at {size} px with {description}")
  preds = predict_lib.predict(forward, manifest, size, batch_size=batch_size,
                              crop_fraction=crop_fraction, keep=("embedding",))
  arrays = {
      "ids": np.asarray(preds.ids, dtype=np.str_),
      "patients": np.asarray(preds.patients, dtype=np.str_),
      "embeddings": np.asarray(preds.embeddings, np.float32),
      "labels": preds.labels.astype(np.float32),
      "mask": preds.mask.astype(np.float32),
      "label_names": np.asarray(list(manifest.label_names), dtype=np.str_).reshape(-1),
      "model": np.asarray([model_source], dtype=np.str_),
  }
  write_arrays(arrays, out_path)
  log(f"[embed] wrote {arrays['embeddings'].shape} embeddings to {out_path}")
  return {"out_path": out_path, "num_images": int(arrays["embeddings"].shape[0]),
          "dim": int(arrays["embeddings"].shape[1]), "image_size": size, "model": model_source}
