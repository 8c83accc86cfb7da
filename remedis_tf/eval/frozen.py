"""Frozen-feature evaluation: a linear probe and a kNN classifier on a backbone's features.

The first check of a self-supervised stage: freeze the backbone, embed a labelled train
set and a labelled test set (evaluation preprocessing), and measure how well the pooled
features separate the labels on the test set, without fine-tuning anything:

* **linear probe** — one L2-regularised logistic regression per finding (multi-label /
  binary; one multinomial model for multi-class) on standardised train features;
* **kNN** — the cosine-similarity weighted kNN of :mod:`remedis_tf.eval.knn`, with the
  train set as the neighbour bank.

Intervals are patient-level percentile bootstraps over test patients. With several
models (e.g. stage 1 and stage 2 of one run), each model after the first also gets the
paired difference to the first model, bootstrapped over the same resampled patients.
The mean AUC of a resample is undefined (and counted, not averaged over fewer classes)
when any finding has no positive or no negative test image in it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import bootstrap, embedding, knn, resampling
from remedis_tf.eval import predict as predict_lib

METHODS = ("linear_probe", "knn")


@dataclasses.dataclass(frozen=True)
class FrozenEvalConfig:
  """Settings of the frozen-feature evaluation.

  Attributes:
    knn_k: neighbours per test image.
    knn_temperature: similarity temperature of the kNN neighbour weights.
    probe_c: inverse L2 strength of the logistic-regression probe (sklearn's ``C``).
    probe_max_iter: L-BFGS iterations of the probe.
    num_bootstrap: patient-level bootstrap resamples of the test set.
    confidence: interval coverage.
    seed: bootstrap seed.
    batch_size: images per forward pass when embedding.
    crop_fraction: evaluation centre crop before resizing.
  """
  knn_k: int = 20
  knn_temperature: float = 0.07
  probe_c: float = 1.0
  probe_max_iter: int = 1000
  num_bootstrap: int = 1000
  confidence: float = 0.95
  seed: int = 0
  batch_size: int = 64
  crop_fraction: float = 0.875

  def __post_init__(self):
    if self.knn_k < 1:
      raise ConfigError(f"knn_k must be >= 1, got {self.knn_k}")
    if self.probe_c <= 0:
      raise ConfigError(f"probe_c must be > 0, got {self.probe_c}")
    if self.num_bootstrap < 1:
      raise ConfigError(f"num_bootstrap must be >= 1, got {self.num_bootstrap}")


def linear_probe_scores(train_x: np.ndarray, train_y: np.ndarray,
                        train_mask: Optional[np.ndarray], test_x: np.ndarray, task: str,
                        c: float = 1.0, max_iter: int = 1000) -> np.ndarray:
  """Test scores ``[N_test, K]`` of logistic regressions fit on frozen train features.

  Features are standardised with the train mean/std. ``multilabel``/``binary``: one
  binary model per column on the rows whose mask is 1 (probability of the positive
  class; NaN column when the train labels of that column are all one value).
  ``multiclass``: one multinomial model on ``argmax(train_y)`` (class probabilities).
  """
  # sklearn is imported here: only the frozen evaluation needs it.
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  train_x = np.asarray(train_x, np.float64)
  test_x = np.asarray(test_x, np.float64)
  y = np.asarray(train_y, np.float64)
  if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
    raise DataError(f"train features {train_x.shape} and test features {test_x.shape} must "
                    "be [N, C] with the same C")
  mean, std = train_x.mean(0), train_x.std(0)
  std = np.where(std > 1e-12, std, 1.0)
  xs, ts = (train_x - mean) / std, (test_x - mean) / std
  k = y.shape[1]
  out = np.full((test_x.shape[0], k), np.nan)
  if task == "multiclass":
    ids = np.argmax(y, axis=1)
    model = LogisticRegression(C=c, max_iter=max_iter).fit(xs, ids)
    out[:] = 0.0
    out[:, model.classes_] = model.predict_proba(ts)
    return out
  m = np.ones_like(y) if train_mask is None else np.asarray(train_mask, np.float64)
  for j in range(k):
    keep = m[:, j] > 0
    labels = y[keep, j] > 0.5
    if labels.all() or not labels.any():
      continue
    model = LogisticRegression(C=c, max_iter=max_iter).fit(xs[keep], labels)
    out[:, j] = model.predict_proba(ts)[:, 1]
  return out


def evaluate_features(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
                      task: str, config: FrozenEvalConfig = FrozenEvalConfig()
                      ) -> Dict[str, Dict]:
  """Linear probe and kNN on precomputed features.

  Args:
    train, test: dicts with ``embeddings [N, C]``, ``labels [N, K]``, ``mask [N, K]``
      (test: also ``patients [N]`` for the patient-level bootstrap).
    task: ``multilabel`` | ``binary`` | ``multiclass``.
    config: see :class:`FrozenEvalConfig`.
  Returns:
    ``{method: {"metric": name, "value", "lower", "upper", "std", "num_undefined",
    "scores": [N_test, K] float64}}`` for ``method`` in :data:`METHODS`. Undefined
    scores (a probe column whose train labels are constant, a kNN query without a
    neighbour knowing the label) are scored as 0.5 (multi-label) / 0 (multi-class).
  """
  if task not in ("multilabel", "binary", "multiclass"):
    raise ConfigError(f"frozen-feature evaluation needs labels; task is {task!r}")
  scores = {
      "linear_probe": linear_probe_scores(train["embeddings"], train["labels"], train["mask"],
                                          test["embeddings"], task, config.probe_c,
                                          config.probe_max_iter),
      "knn": knn.knn_bank_scores(test["embeddings"], train["embeddings"], train["labels"],
                                 train["mask"], k=config.knn_k,
                                 temperature=config.knn_temperature),
  }
  name, fn = resampling.metric_for(task)
  out = {}
  for method, s in scores.items():
    s = np.nan_to_num(s, nan=0.5 if task != "multiclass" else 0.0)
    ci = bootstrap.bootstrap_ci(fn, test["labels"], s, test["mask"], groups=test["patients"],
                                num_samples=config.num_bootstrap,
                                confidence=config.confidence, seed=config.seed)
    out[method] = {"metric": name, **ci.to_dict(), "scores": s}
  return out


def paired_difference(test: Mapping[str, np.ndarray], scores_a: np.ndarray,
                      scores_b: np.ndarray, task: str,
                      config: FrozenEvalConfig = FrozenEvalConfig()) -> Dict:
  """``metric(scores_b) − metric(scores_a)`` on the same test images, with a paired
  patient-level bootstrap interval (both models scored on each resample)."""
  _, fn = resampling.metric_for(task)

  def diff(labels, sa, sb, mask, sample_weight=None):
    return fn(labels, sb, mask, sample_weight) - fn(labels, sa, mask, sample_weight)

  ci = bootstrap.bootstrap_ci(diff, test["labels"], scores_a, scores_b, test["mask"],
                              groups=test["patients"], num_samples=config.num_bootstrap,
                              confidence=config.confidence, seed=config.seed)
  return ci.to_dict()


def embed(model_source: str, manifest: Manifest, image_size: Optional[int] = None,
          config: FrozenEvalConfig = FrozenEvalConfig(), variant: Optional[str] = None,
          which: str = "best") -> Dict[str, np.ndarray]:
  """Pooled backbone features of ``manifest`` under ``model_source`` (any source
  :func:`remedis_tf.eval.embedding.load_embedder` takes) → the dict
  :func:`evaluate_features` reads."""
  forward, size, _ = embedding.load_embedder(model_source, variant, image_size, which)
  preds = predict_lib.predict(forward, manifest, size, batch_size=config.batch_size,
                              crop_fraction=config.crop_fraction, keep=("embedding",))
  return {"embeddings": np.asarray(preds.embeddings, np.float32), "labels": preds.labels,
          "mask": preds.mask, "patients": np.asarray(preds.patients)}


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
    tr = embed(source, train, image_size, config)
    te = embed(source, test, image_size, config)
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
