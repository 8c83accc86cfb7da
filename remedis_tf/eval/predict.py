"""Running a trained model over a manifest: scores, embeddings, labels and ids as numpy."""

from __future__ import annotations

import dataclasses
import io
import weakref
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.data import augment as augment_lib
from remedis_tf.data import decode, pipeline
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import DataError


@dataclasses.dataclass
class Predictions:
  """Model outputs for every record of a manifest, in manifest order.

  Attributes:
    ids, patients: string arrays ``[N]``.
    labels, mask: float32 ``[N, K]`` (K = 0 for unlabelled data).
    scores: float32 ``[N, K']`` probabilities (None when only embeddings were asked for).
    embeddings: float32 ``[N, C]`` pooled features (None unless requested).
    logits: float32 ``[N, K']`` raw logits (None unless requested and the model gives
      them); rank multi-class outputs on these, not on the probabilities.
  """
  ids: np.ndarray
  patients: np.ndarray
  labels: np.ndarray
  mask: np.ndarray
  scores: Optional[np.ndarray] = None
  embeddings: Optional[np.ndarray] = None
  logits: Optional[np.ndarray] = None


def predict(forward: Callable[[tf.Tensor], Dict[str, tf.Tensor]], manifest: Manifest,
            image_size: int, batch_size: int = 64,
            crop_fraction: float = augment_lib.EVAL_CROP_FRACTION, keep: tuple = ("scores",),
            progress: Optional[Callable[[int, int], None]] = None) -> Predictions:
  """Runs ``forward(images) -> {"scores": [B,K], "embedding": [B,C], "logits": [B,K]}``
  over ``manifest``.

  Images go through the evaluation preprocessing (centre crop ``crop_fraction`` then resize
  to ``image_size``). ``keep`` selects which outputs are collected ("scores",
  "embedding", "logits"); one the forward does not return is None in the result. Runs
  outside any replica context (model variables are read directly).
  """
  if len(manifest) == 0:
    raise DataError(f"cannot evaluate on an empty dataset ({manifest.source or 'manifest'})")
  dataset = pipeline.eval_dataset(manifest, image_size=image_size, batch_size=batch_size,
                                  crop_fraction=crop_fraction,
                                  max_image_size=decode.working_size(image_size))
  step = _compiled(forward)
  collected: Dict[str, list] = {k: [] for k in ("id", "patient", "label", "mask") + keep}
  done = 0
  for batch in dataset:
    outputs = step(batch["image"])
    for k in ("id", "patient", "label", "mask"):
      collected[k].append(batch[k].numpy())
    for k in keep:
      if k in outputs:
        collected[k].append(np.asarray(outputs[k], np.float32))
    done += int(batch["image"].shape[0])
    if progress is not None:
      progress(done, len(manifest))
  cat = {k: np.concatenate(v, axis=0) for k, v in collected.items() if v}
  return Predictions(
      ids=_to_str(cat["id"]), patients=_to_str(cat["patient"]),
      labels=cat["label"].astype(np.float32), mask=cat["mask"].astype(np.float32),
      scores=cat.get("scores"), embeddings=cat.get("embedding"), logits=cat.get("logits"))


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled(forward):
  """One tf.function per forward callable, so predicting several sets traces once."""
  if isinstance(forward, tf.types.experimental.PolymorphicFunction):
    return forward
  try:
    return _COMPILED.setdefault(forward, tf.function(forward, reduce_retracing=True))
  except TypeError:  # not weak-referenceable
    return tf.function(forward, reduce_retracing=True)


def _to_str(values: np.ndarray) -> np.ndarray:
  return np.asarray([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values])


def save_predictions(path: str, preds: Predictions, task: str) -> None:
  """Writes ``preds``' scores/labels/mask/patients and ``task`` to ``path`` (``.npz``, no
  pickle; local or gs://)."""
  buf = io.BytesIO()
  np.savez(buf, scores=np.asarray(preds.scores, np.float32), labels=preds.labels,
           mask=preds.mask, patients=np.asarray(preds.patients, dtype=np.str_),
           task=np.asarray(task))
  io_utils.atomic_write_bytes(path, buf.getvalue())


def load_predictions(path: str) -> Dict[str, np.ndarray]:
  """What :func:`save_predictions` wrote."""
  with tf.io.gfile.GFile(path, "rb") as f:
    data = np.load(io.BytesIO(f.read()), allow_pickle=False)
    return {k: data[k] for k in data.files}
