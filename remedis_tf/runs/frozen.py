"""Frozen-feature comparison of models: embed a labelled train and test set with each
model's frozen backbone, then score a linear probe and a kNN classifier on the features
(:mod:`remedis_tf.eval.frozen`), with paired differences to the first model.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import predict as predict_lib
from remedis_tf.eval import resampling
from remedis_tf.eval.frozen import (METHODS, FrozenEvalConfig, evaluate_features,
                                    paired_difference)
from remedis_tf.runs import embed as embed_lib


def embed(model_source: str, manifests: Sequence[Manifest], image_size: Optional[int] = None,
          config: FrozenEvalConfig = FrozenEvalConfig(), variant: Optional[str] = None,
          which: str = "best") -> List[Dict[str, np.ndarray]]:
  """Pooled backbone features of each of ``manifests`` under ``model_source`` (any source
  :func:`remedis_tf.runs.embed.load_embedder` takes; loaded once for all of them) → one
  dict per manifest, as :func:`evaluate_features` reads it."""
  forward, size, _ = embed_lib.load_embedder(model_source, variant, image_size, which)
  out = []
  for manifest in manifests:
    preds = predict_lib.predict(forward, manifest, size, batch_size=config.batch_size,
                                crop_fraction=config.crop_fraction, keep=("embedding",))
    out.append({"embeddings": np.asarray(preds.embeddings, np.float32),
                "labels": preds.labels, "mask": preds.mask,
                "patients": np.asarray(preds.patients)})
  return out


def _ci(entry: Mapping, fmt: str = ".3f") -> str:
  f = lambda v: "n/a" if v is None else format(v, fmt)  # noqa: E731
  return f"{f(entry['value'])} [{f(entry['lower'])}, {f(entry['upper'])}]"


def compare_models(models: Mapping[str, str], train: Manifest, test: Manifest,
                   image_size: Optional[int] = None,
                   config: FrozenEvalConfig = FrozenEvalConfig(),
                   log: Callable[[str], None] = print) -> Dict:
  """Frozen-feature evaluation of several models on one train/test pair.

  Args:
    models: ordered ``{name: model source}`` (run directory, ``.npz``, SavedModel, ...);
      every model after the first is also compared with the first one (paired).
    train: labelled set the probe is fit on and the kNN bank comes from.
    test: labelled held-out set (patients disjoint from ``train``).
    image_size: input resolution (default: each model's training size).
  Returns:
    JSON-friendly ``{"task", "metric", "train", "test", "n_train", "n_test",
    "models": {name: {method: {value, lower, upper, std, num_undefined}}},
    "differences": {name: {method: {...}}}}`` (differences: model minus the first model).
  """
  if not models:
    raise ConfigError("frozen-feature evaluation needs at least one model")
  if train.task != test.task or tuple(train.label_names) != tuple(test.label_names):
    raise DataError(f"train ({train.source}: {train.task}, {list(train.label_names)}) and "
                    f"test ({test.source}: {test.task}, {list(test.label_names)}) must have "
                    "the same labels")
  shared = set(train.patients()) & set(test.patients())
  if shared:
    raise DataError(f"{len(shared)} patients are in both {train.source} and {test.source} "
                    f"(e.g. {sorted(shared)[0]}); the frozen evaluation needs disjoint sets")
  results, scores, test_arrays = {}, {}, None
  for name, source in models.items():
    tr, te = embed(source, (train, test), image_size, config)
    test_arrays = te
    res = evaluate_features(tr, te, train.task, config)
    scores[name] = {m: r.pop("scores") for m, r in res.items()}
    results[name] = res
    log(f"[frozen] {name}: " + ", ".join(f"{m} {r['metric']} {_ci(r)}" for m, r in res.items()))
  first = next(iter(models))
  differences = {}
  for name in list(models)[1:]:
    differences[name] = {m: paired_difference(test_arrays, scores[first][m], scores[name][m],
                                              train.task, config) for m in METHODS}
    log(f"[frozen] {name} − {first}: " + ", ".join(f"{m} {_ci(d, '+.3f')}"
                                                   for m, d in differences[name].items()))
  return {"task": train.task, "metric": resampling.metric_for(train.task)[0],
          "train": train.source,
          "test": test.source, "n_train": len(train), "n_test": len(test),
          "reference": first, "models": results, "differences": differences,
          "config": dataclasses.asdict(config)}
