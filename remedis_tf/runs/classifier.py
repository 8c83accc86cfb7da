"""A trained classifier, whatever it was saved as: loading one to predict, and exporting a
fine-tuning run's classifier.

A *model source* is either

* a fine-tuning run directory written by :func:`remedis_tf.runs.stages.run_supervised`
  (``config.json`` + checkpoints; the model-selection checkpoint in ``best/`` is used by
  default; its evaluation centre crop is the run's ``AugmentConfig.eval_crop_fraction``),
* a classifier preset written by :func:`export_classifier_preset` (a KerasHub
  ``ImageClassifier`` preset, :mod:`remedis_tf.weights.keras_hub_presets`; older
  remedis_tf-format presets are read too), local, ``gs://`` or a ``kaggle://`` / ``hf://``
  handle, or
* a classifier SavedModel written by :func:`export_classifier_savedmodel` (format:
  :mod:`remedis_tf.weights.classifier_export`).

Calibration: a run directory's model-selection checkpoint comes with temperatures fitted
on its validation set (``best/temperature.json``, see :mod:`remedis_tf.eval.calibration`);
the model's probabilities are then ``act(logits / T)`` both when loaded from the run
directory and in its exports.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import tensorflow as tf

from remedis_tf.data import augment as augment_lib
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError
from remedis_tf.eval import calibration as calibration_lib
from remedis_tf.eval import predict as predict_lib
from remedis_tf.models.classifier import Classifier
from remedis_tf.runs import stages
from remedis_tf.train.supervised import SupervisedTask
from remedis_tf.weights import classifier_export
from remedis_tf.weights import preset as preset_lib


@dataclasses.dataclass
class LoadedClassifier:
  """A classifier ready to predict, whatever it was loaded from.

  Attributes:
    source: the model source string.
    kind: ``"run_dir"``, ``"preset"`` or ``"savedmodel"``.
    label_names: K output names, in output order.
    task: ``multilabel`` | ``binary`` | ``multiclass``.
    image_size: side of the square input images the model was trained at.
    crop_fraction: evaluation centre crop applied before resizing.
    forward: ``images [B,S,S,3] in [0,1] -> {"scores": [B,K] probabilities (of
      logits / temperature), "logits": [B,K] raw, "embedding": [B,C]}``.
    info: provenance (restored checkpoint, run config or sidecar contents).
    temperature: the calibration record the scores use (None: T = 1).
  """
  source: str
  kind: str
  label_names: Tuple[str, ...]
  task: str
  image_size: int
  crop_fraction: float
  forward: Callable[[tf.Tensor], Dict[str, tf.Tensor]]
  info: Dict[str, Any]
  temperature: Optional[Dict[str, Any]] = None

  def predict(self, manifest: Manifest, batch_size: int = 64,
              keep: Tuple[str, ...] = ("scores",)) -> predict_lib.Predictions:
    """Runs the model over ``manifest`` (evaluation preprocessing) in manifest order."""
    return predict_lib.predict(self.forward, manifest, self.image_size, batch_size=batch_size,
                               crop_fraction=self.crop_fraction, keep=keep)


def _stored(source: str, kind: str, stored: classifier_export.StoredClassifier
            ) -> LoadedClassifier:
  return LoadedClassifier(source, kind, stored.label_names, stored.task, stored.image_size,
                          stored.crop_fraction, stored.forward, stored.info, stored.temperature)


def load_model(model_source: str, which: str = "best") -> LoadedClassifier:
  """Loads a classifier from a fine-tuning run directory, preset or classifier SavedModel.

  Args:
    model_source: run directory (``config.json`` of a supervised run), a classifier preset
      (:func:`export_classifier_preset`) or a directory written by
      :func:`export_classifier_savedmodel`.
    which: for run directories, ``best`` (model-selection checkpoint, falling back to the
      latest when the run had no validation set) or ``latest``.
  """
  if which not in ("best", "latest"):
    raise ConfigError(f"which must be 'best' or 'latest', got {which!r}")
  if not model_source:
    raise ConfigError("no model given: pass a fine-tuning run directory or a classifier "
                      "SavedModel")
  if preset_lib.is_keras_hub(model_source):  # before any stat: kaggle:// is no file system
    return _stored(model_source, "preset", classifier_export.load_classifier_preset(model_source))
  if classifier_export.is_classifier_savedmodel(model_source):
    return _stored(model_source, "savedmodel",
                   classifier_export.load_classifier_savedmodel(model_source))
  if preset_lib.is_preset(model_source):
    return _stored(model_source, "preset", classifier_export.load_classifier_preset(model_source))
  if tf.io.gfile.exists(os.path.join(model_source, "saved_model.pb")):
    raise ConfigError(f"{model_source} is a SavedModel without a "
                      f"{classifier_export.SIDECAR_FILE} sidecar (a backbone, not a "
                      "classifier); evaluate a fine-tuning run or a model exported with "
                      "export_classifier_savedmodel")
  if not tf.io.gfile.exists(os.path.join(model_source, "config.json")):
    raise ConfigError(f"{model_source} is neither a fine-tuning run directory (no config.json)"
                      " nor a classifier SavedModel")
  task, run_config = stages.load_classifier(model_source, which=which)
  temperature = tf.constant(calibration_lib.temperature_vector(
      task.temperature, task.manifest.label_names))
  return LoadedClassifier(model_source, "run_dir", tuple(task.manifest.label_names),
                          task.manifest.task, int(task.image_size),
                          stages.eval_crop_fraction(run_config),
                          task.inference_fn(temperature), run_config, task.temperature)


def _require_built(task: SupervisedTask, what: str) -> None:
  if task.classification_head is None:
    raise ConfigError(f"{what} needs a built SupervisedTask")


def export_classifier_preset(task: SupervisedTask, out_dir: str, source: str = "",
                             crop_fraction: float = augment_lib.EVAL_CROP_FRACTION,
                             card: Optional[Mapping[str, Any]] = None) -> str:
  """Writes a trained ``SupervisedTask`` as a KerasHub classifier preset folder
  (``keras_hub.models.ImageClassifier.from_preset`` loads it after ``import remedis_tf``;
  its ``predict`` gives the scores :func:`load_model` gives) with a model card; ``card``
  adds ``metrics``, ``license``, ``intended_use`` (see :mod:`remedis_tf.weights.model_card`;
  ``data`` defaults to the training manifest's source).

  ``task.json`` records the projection layer the head reads, the head size,
  ``label_names``, ``task`` and the calibration record saved with the best checkpoint (None
  without one); ``image_converter.json`` the ``image_size`` and ``crop_fraction`` (pass the
  run's :func:`remedis_tf.runs.stages.eval_crop_fraction`); ``config.json`` the backbone
  variant. Also loads with :func:`remedis_tf.weights.preset.from_preset` (a
  :class:`Classifier` returning ``{"logits", "embedding"}``) and evaluates with
  :func:`load_model`. Returns ``out_dir``.
  """
  _require_built(task, "export_classifier_preset")
  model = Classifier(task.backbone, task.classification_head, task.projection_head,
                     int(task.config.from_projection_layer))
  return preset_lib.save_to_preset(model, out_dir, image_size=int(task.image_size),
                                   label_names=list(task.manifest.label_names),
                                   task=task.manifest.task, crop_fraction=float(crop_fraction),
                                   source=source, temperature=task.temperature,
                                   card={"data": (f"fine-tuned on {task.manifest.source}"
                                                  if task.manifest.source else None),
                                         **dict(card or {})})


def export_classifier_savedmodel(task: SupervisedTask, out_dir: str, source: str = "",
                                 crop_fraction: float = augment_lib.EVAL_CROP_FRACTION,
                                 temperature: Optional[Mapping[str, Any]] = None) -> str:
  """Writes a trained ``SupervisedTask`` as a self-describing classifier SavedModel
  (:func:`remedis_tf.weights.classifier_export.write_classifier_savedmodel`).

  ``temperature`` is a calibration record (default ``task.temperature``, which
  :func:`remedis_tf.runs.stages.load_classifier` sets for the best checkpoint; none →
  T = 1); ``crop_fraction`` the evaluation centre crop recorded in the sidecar (pass the
  run's :func:`remedis_tf.runs.stages.eval_crop_fraction`). Returns ``out_dir``.
  """
  _require_built(task, "export_classifier_savedmodel")
  return classifier_export.write_classifier_savedmodel(
      lambda images: task.forward(images, training=False), task.modules(), out_dir,
      label_names=task.manifest.label_names, task=task.manifest.task,
      image_size=int(task.image_size), variant=task.config.variant,
      from_projection_layer=int(task.config.from_projection_layer),
      crop_fraction=crop_fraction,
      temperature=temperature if temperature is not None else task.temperature, source=source)
