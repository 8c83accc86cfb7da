"""The linear-probe arm of a data-efficiency sweep: frozen features, one logistic
regression per cell.

Each model embeds the new site's train, validation and test sets once
(:func:`remedis_tf.runs.frozen.embed`); every (model, fraction, seed) cell then fits
:func:`remedis_tf.eval.frozen.linear_probe_scores` on the features of the same nested
patient-level subset the fine-tuning arm trains on
(:func:`remedis_tf.data.label_fraction.select_fraction`), with the L2 strength ``C`` chosen
from ``c_grid`` on the validation split (the task's metric; ties keep the first), and is
scored on the test set. The test scores of all cells go through the same two-level
bootstrap as the fine-tuning arm (:func:`remedis_tf.eval.resampling.replicates`, same
``num_bootstrap`` and seed, hence the same patient and seed draws).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from remedis_tf import io_utils
from remedis_tf.data.label_fraction import select_fraction
from remedis_tf.data.manifest import Manifest
from remedis_tf.eval import resampling
from remedis_tf.eval.frozen import FrozenEvalConfig, linear_probe_scores
from remedis_tf.runs import frozen, selection

PROBE_FILE = "probe_results.json"
DEFAULT_C_GRID = (0.01, 0.1, 1.0)


def _fill(scores: np.ndarray, task: str) -> np.ndarray:
  return np.nan_to_num(scores, nan=0.5 if task != "multiclass" else 0.0)


def probe_sweep(models: Mapping[str, str], train: Manifest, validation: Manifest,
                test: Manifest, fractions: Sequence[float], seeds: Sequence[int],
                image_size: Optional[int], out_dir: str,
                c_grid: Sequence[float] = DEFAULT_C_GRID, num_bootstrap: int = 1000,
                bootstrap_seed: int = 0, max_iter: int = 1000,
                log: Callable[[str], None] = print) -> Dict:
  """Runs the probe arm; writes ``out_dir/probe_results.json``.

  Returns ``{"replicates": resampling.Replicates, "rows": [CombinedRow], "cells": {key:
  {"c", "val_value", "val_grid", "n_train"}}, "metric": name, "c_grid": [...]}``.
  """
  metric, fn = resampling.metric_for(train.task)
  index = {r.example_id: i for i, r in enumerate(train.records)}
  subsets = {(f, s): [index[r.example_id] for r in (
      train if f >= 1.0 else select_fraction(train, f, seed=s)).records]
      for f in fractions for s in seeds}
  scores, cells = {}, {}
  for name, source in models.items():
    tr, va, te = frozen.embed(source, (train, validation, test), image_size,
                              FrozenEvalConfig())
    for (f, s), idx in sorted(subsets.items()):
      x, y, m = tr["embeddings"][idx], tr["labels"][idx], tr["mask"][idx]
      values = {}
      for c in c_grid:
        val = _fill(linear_probe_scores(x, y, m, va["embeddings"], train.task, c, max_iter),
                    train.task)
        values[float(c)] = float(fn(va["labels"], val, va["mask"]))
      c = selection.choose(values, [float(v) for v in c_grid])
      scores[(name, float(f), int(s))] = _fill(
          linear_probe_scores(x, y, m, te["embeddings"], train.task, c, max_iter), train.task)
      cells[f"{name}/f{f:g}_s{s}"] = {"c": c, "val_value": values[c], "n_train": len(idx),
                                      "val_grid": {f"{k:g}": v for k, v in values.items()}}
  reps = resampling.replicates(scores, te["labels"], te["mask"], te["patients"], test.task,
                               num_bootstrap, bootstrap_seed)
  rows = resampling.combined_rows(reps)
  for r in rows:
    log(f"[probe] {r.model} fraction {r.fraction:g}: test {metric} {r.mean:.3f} "
        f"[{r.lower:.3f}, {r.upper:.3f}]")
  io_utils.ensure_dir(out_dir)
  io_utils.atomic_write_json(os.path.join(out_dir, PROBE_FILE), {
      "metric": metric, "c_grid": [float(c) for c in c_grid], "selection": "validation",
      "validation": validation.source, "test": test.source, "cells": cells,
      "rows": [{"model": r.model, "fraction": r.fraction, "mean": r.mean, "lower": r.lower,
                "upper": r.upper, "per_seed": {str(k): v for k, v in r.per_seed.items()}}
               for r in rows]})
  return {"replicates": reps, "rows": rows, "cells": cells, "metric": metric,
          "c_grid": [float(c) for c in c_grid]}
