"""The demo's ``findings.json``: every REMEDIS − baseline (and stage 2 − stage 1)
comparison the demo measured, as paired differences with intervals and verdicts
(:mod:`remedis_tf.eval.findings`), and the protocol they were measured under.

* ``frozen_site_a_<method>``: stage-2 − stage-1 frozen features on site A (linear probe,
  kNN; paired bootstrap over test patients; the features have no seed);
* ``id_site_a_finetune``, ``ood_site_<x>_zero_shot``: REMEDIS − baseline fine-tuned on
  site A (each arm's lr and checkpoint chosen on site A's validation split), tested on
  site A and zero-shot on sites B and C; paired over test patients and seeds;
* ``efficiency_site_b_<arm>_f<fraction>`` and ``..._headline`` for the fine-tuning and
  linear-probe arms of the site-B sweep (:func:`findings.sweep_findings`);
* ``baseline_learning_curve``: the baseline's fine-tuning rise from the smallest fraction
  to 100 % on site B (the benchmark can measure data efficiency only if it rises).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping

from remedis_tf import io_utils
from remedis_tf.data.manifest import Manifest
from remedis_tf.eval import findings as findings_lib

FINDINGS_FILE = "findings.json"


def collect(frozen_result: Mapping, seed_reps: Mapping, sweep_result, probe: Mapping
            ) -> Dict[str, Any]:
  """``{"findings": [...], "baseline_learning_curve", "curves"}`` of the demo's results."""
  found = []
  metric = frozen_result["metric"]
  for name, diffs in frozen_result["differences"].items():
    for method, ci in diffs.items():
      found.append(findings_lib.from_interval(
          f"frozen_site_a_{method}", metric, ci,
          arms={"a": frozen_result["reference"], "b": name},
          values=[frozen_result["models"][frozen_result["reference"]][method]["value"],
                  frozen_result["models"][name][method]["value"]]))
  for set_name, reps in seed_reps.items():
    label = "id_site_a_finetune" if set_name == "id_site_a" else f"{set_name}_zero_shot"
    found.append(findings_lib.compare(label, metric, reps, ("baseline", 1.0),
                                      ("remedis", 1.0)))
  curves = {}
  for arm, reps in (("finetune", sweep_result.replicates), ("probe", probe["replicates"])):
    if reps is None:
      continue
    found.extend(findings_lib.sweep_findings(reps, metric, "site_b", arm))
    for model in ("baseline", "remedis"):
      fractions = sorted(f for m, f in reps.cells() if m == model)
      if len(fractions) > 1:
        curves[f"{model}_{arm}"] = findings_lib.learning_curve(reps, model, fractions[0],
                                                               fractions[-1])
  return {"findings": found, "baseline_learning_curve": curves.get("baseline_finetune"),
          "curves": curves}


def write(cfg, out: str, frozen_result: Mapping, seed_reps: Mapping, sweep_result,
          probe: Mapping, selections: Mapping, site_b: Mapping[str, Manifest]
          ) -> Dict[str, Any]:
  """Writes ``out/findings.json`` and returns it (``cfg``: the DemoConfig). Timings are
  not in it (they differ between identical runs); the report's last section has them."""
  got = collect(frozen_result, seed_reps, sweep_result, probe)
  protocol = {
      "selection": "validation",
      "lr_grid": list(cfg.lr_grid), "probe_c_grid": list(cfg.probe_c_grid),
      "lr_chosen_per": ("arm (site A) and arm x fraction (site B), on the first seed; the "
                        "other seeds reuse it; the checkpoint is chosen per run"),
      "seeds": {"site_a_finetune": list(cfg.finetune_seeds),
                "site_b_sweep": list(cfg.sweep_seeds)},
      "fractions": list(cfg.fractions),
      "step_rule": (f"epochs: steps = ceil(epochs · n / batch) in [min, max] "
                    f"(site A: {cfg.finetune_epochs:g} epochs, at most {cfg.finetune_steps} "
                    f"steps; site B cells: {cfg.sweep_epochs:g} epochs in "
                    f"[{cfg.sweep_min_steps}, {cfg.sweep_steps}] steps), batch "
                    f"min({cfg.finetune_batch}, n), BiT-HyperRule's shape (warmup, ÷10 "
                    "decays) stretched to that length; docs/demo_protocol.md"),
      "checkpoint": "best validation metric of periodic evaluations (run_dir/best)",
      "validation": {"site_a": "site_a/valid (generated split, disjoint patients)",
                     "site_b": (f"{cfg.site_b_val_fraction:g} of site B's labelled patients "
                                "held out once, fixed across fractions and seeds "
                                f"({len(site_b['validation'])} images; fractions of the "
                                f"other {len(site_b['fractions of'])})")},
      "metric": "mean AUC over the findings (the task's own metric)",
      "interval": (f"95% percentile bootstrap, {cfg.num_bootstrap} replicates drawing test "
                   "patients (and seeds, where there are seeds) with replacement, shared "
                   "by both arms (paired)"),
      "bce_reduction": ("sum over the K findings (kept); the lr grid is searched per arm "
                        "on validation, which absorbs the K-fold gradient scale"),
      "quick": bool(cfg.quick),
  }
  doc = findings_lib.document(protocol, got["findings"], got["baseline_learning_curve"],
                              learning_curves=got["curves"], selections=dict(selections))
  io_utils.atomic_write_json(os.path.join(out, FINDINGS_FILE), doc)
  return doc
