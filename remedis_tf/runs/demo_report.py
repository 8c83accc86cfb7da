"""The demo's Markdown report: every table and figure from the numbers the demo's runs
and evaluations wrote (:mod:`remedis_tf.runs.demo`)."""

from __future__ import annotations

import os
import platform
import time
from typing import Dict, List

import tensorflow as tf

from remedis_tf.eval import frozen, report, resampling, reviewer_report


def _final_metrics(result, names) -> str:
  """", final loss 0.123 ..." for a run trained now; a note for one resumed as finished."""
  if not result.last_metrics:
    return " (trained by an earlier run of the demo in this folder)."
  return ", final " + ", ".join(f"{n.replace('_', ' ')} {result.last_metrics[n]:.3f}"
                                for n in names) + "."


def _ci_text(entry) -> str:
  return report.format_ci(entry.get("value"), entry.get("lower"), entry.get("upper"))


def _num(v, fmt="+.3f") -> str:
  return "n/a" if v is None else format(v, fmt)


def findings_section(doc: Dict) -> report.Section:
  """The paired findings of ``findings.json`` (first in the report)."""
  rows = [{"finding": f["name"], "metric": f["metric"],
           "arms (b − a)": (f"{f['arms']['b']} − {f['arms']['a']}" if "arms" in f else ""),
           "a, b": ", ".join(f"{v:.3f}" for v in f.get("values", [])),
           "difference [95% paired interval]":
               f"{_num(f['estimate'])} [{_num(f['interval'][0])}, {_num(f['interval'][1])}]",
           "verdict": f["verdict"]} for f in doc["findings"]]
  curves = [{"curve": name, "from → to fraction": f"{c['from_fraction']:g} → {c['to_fraction']:g}",
             "values": ", ".join(f"{v:.3f}" for v in c["values"]),
             "rise [95% paired interval]":
                 f"{_num(c['rise'])} [{_num(c['interval'][0])}, {_num(c['interval'][1])}]",
             "verdict": "rises" if c["verdict"] == "better" else c["verdict"]}
            for name, c in doc.get("learning_curves", {}).items()]
  p = doc["protocol"]
  return report.Section("Findings (findings.json)", blocks=[
      "Every comparison as a paired difference (second arm − first) on the same test "
      f"patients and seeds. Verdict rule: {doc['verdict_rule']}. Protocol: selection on "
      f"{p['selection']} (lr grid {p['lr_grid']}, probe C grid {p['probe_c_grid']}; "
      f"checkpoint: {p['checkpoint']}); step rule: {p['step_rule']}; seeds "
      f"{p['seeds']}; interval: {p['interval']}; validation: {p['validation']}.",
      report.Table(rows=rows),
      report.Table(rows=curves, caption="Learning curves on site B (smallest fraction → "
                   "100%); the benchmark measures data efficiency only if the baseline's "
                   "fine-tuning curve rises")])


def probe_section(probe: Dict, cfg) -> report.Section:
  """The site-B linear-probe arm (frozen features, C chosen on site B's validation)."""
  rows = [{"model": r.model, "fraction": r.fraction,
           f"mean {probe['metric']} [95% interval, seeds x test patients]":
               report.format_ci(r.mean, r.lower, r.upper),
           "per seed": ", ".join(f"{v:.3f}" for v in r.per_seed.values())}
          for r in probe["rows"]]
  return report.Section("Site B linear-probe arm (frozen features)", blocks=[
      "Frozen pooled features of each model (baseline: stage 1, REMEDIS: stage 2), one "
      "logistic regression per finding fit on the same nested fractions as the fine-tuning "
      f"arm, C chosen from {list(cfg.probe_c_grid)} on site B's validation split.",
      report.Table(rows=rows)])


def write_report(cfg, out, data, sets, stage1, stage2, eval_results, de, timer, grid_png,
                 pairs_png, roc_pngs, total_seconds, extra_sections=(),
                 findings=None) -> str:
  """Writes ``out/report.md`` (``cfg``: the DemoConfig; the rest: what ``run_demo``
  measured) and returns its path."""
  machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python "
             f"{platform.python_version()}, TensorFlow {tf.__version__}")
  rows = []
  for set_name in ("id_site_a", "ood_site_b", "ood_site_c"):
    row = {"eval set": set_name}
    for model, results in eval_results.items():
      row[f"{model} mean AUC [95% CI]"] = _ci_text(results[set_name]["metrics"]["mean_auc"])
    rows.append(row)
  per_class = []
  for model, results in eval_results.items():
    for finding, entry in results["id_site_a"]["per_class"].items():
      per_class.append({"model": model, "finding": finding,
                        "AUC [95% CI]": _ci_text(entry["auc"]),
                        "sensitivity": _ci_text(entry["sensitivity"]),
                        "specificity": _ci_text(entry["specificity"]),
                        "positives": entry["num_positive"]})
  data_rows = [{"split": k, "images": len(v), "patients": len(v.by_patient())}
               for k, v in sorted(sets.items())]
  stage_rows = [{"stage": k, "seconds": round(v)} for k, v in timer.times.items()]
  sections = [
      report.Section("REMEDIS demo report", level=1, blocks=[
          f"Measured on {machine}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"total wall time {total_seconds:.0f} s; mode: "
          + ("--quick (smoke test: tiny model, a few steps; the numbers are not meaningful)"
             if cfg.quick else "full demo") + ".",
          "findings.json holds the paired comparisons below, the protocol, the lr/C "
          "choices and validation scores, and the time per stage.",
          "Data is the embedded synthetic benchmark (no clinical meaning; see "
          "data/SYNTHETIC.md). Backbone: BiT ResNet-v2 variant "
          f"`{cfg.variant}` at {cfg.image_size} px. Every number below was computed by "
          "this run; confidence intervals are patient-level bootstrap 95% intervals "
          f"({cfg.num_bootstrap} resamples)."]),
      *([findings_section(findings)] if findings else []),
      report.Section("Data", blocks=[
          report.Table(rows=data_rows),
          report.Image(path=grid_png, caption="Synthetic sites and findings")]),
      report.Section("Stage 1 (supervised upstream) and stage 2 (contrastive)", blocks=[
          f"Stage 1: {stage1.final_step} steps on the natural-image stand-in for ImageNet"
          + _final_metrics(stage1, ("loss",)),
          f"Stage 2: {stage2.final_step} steps of SimCLR on site A's unlabelled pool"
          + _final_metrics(stage2, ("contrastive_loss", "contrastive_accuracy")),
          "kNN monitor (frozen pooled features, leave-one-patient-out, site A validation "
          "set, mean AUC over findings) during stage 2: " + (", ".join(
              f"step {h['step']}: {h['knn_mean_auc']:.3f}" for h in stage2.history
              if "knn_mean_auc" in h) or "not run in this invocation") + ".",
          report.Image(path=pairs_png, caption="Augmented positive pairs (stage-2 views, SimCLR)")]),
      report.Section("ID and zero-shot OOD performance (mean AUC over findings)", blocks=[
          report.Table(rows=rows),
          report.Table(rows=per_class, caption="Per-finding AUC, site A test"),
          *[report.Image(path=p, caption=os.path.basename(p)) for p in roc_pngs]]),
      report.Section("Data-efficient generalisation to site B", blocks=[
          "Baseline (stage 1 weights) and REMEDIS (stage 2 weights) fine-tuned on nested, "
          "patient-level fractions of site B's labelled training set (minus its held-out "
          "validation patients) and tested on site B's test set; every cell chose its lr "
          "and checkpoint on site B's validation split.",
          (resampling.format_headline(de.headline_interval) if de.headline_interval
           else de.headline.summary if de.headline else de.headline_note),
          f"Method: {de.headline.method}" if de.headline else "",
          (f"Interval: {de.headline_interval['method']}" if de.headline_interval
           else f"No seed x test interval: {de.interval_note}"),
          report.Table(rows=[{"model": r.model, "fraction": r.fraction,
                              "n_train": int(r.n_train), "seeds": int(r.num_seeds),
                              f"mean {de.metric} [95% interval, seeds x test patients]":
                                  report.format_ci(r.mean, r.lower, r.upper)}
                             for r in de.table]),
          report.Image(path=de.files["plot"], caption="Test metric vs label fraction of site B")]),
      *extra_sections,
      report.Section("Time per stage", blocks=[report.Table(rows=stage_rows)]),
  ]
  sections[-1:-1] = _reviewer_sections(out, list(eval_results))
  return report.write_report(out, sections)


def _reviewer_sections(out: str, models: List[str]) -> List[report.Section]:
  """Calibration and subgroup sections from the evaluation folders of each model."""
  dirs = {m: os.path.join(out, "eval", m) for m in models}
  test_sets = ("id_site_a", "ood_site_b", "ood_site_c")
  return [reviewer_report.calibration_section(dirs, test_sets, images_for=("id_site_a",)),
          reviewer_report.subgroup_section(dirs, test_sets)]


def frozen_section(result: Dict) -> report.Section:
  """The stage 1 vs stage 2 frozen-feature table of a ``compare_models`` result."""
  rows = []
  for method in frozen.METHODS:
    row = {"method": method.replace("_", " ")}
    for name, res in result["models"].items():
      row[f"{name} {result['metric']} [95% CI]"] = _ci_text(res[method])
    for name, diff in result["differences"].items():
      row[f"{name} − {result['reference']} [95% CI]"] = _ci_text(diff[method])
    rows.append(row)
  return report.Section("Frozen-feature evaluation: stage 1 vs stage 2", blocks=[
      "Backbones frozen; pooled features of site A's labelled train split "
      f"({result['n_train']} images) fit one logistic-regression probe per finding and form "
      f"the kNN bank; scored on site A's test split ({result['n_test']} images). Mean AUC "
      "over findings with patient-level bootstrap 95% CIs; the difference column is a "
      "paired bootstrap over the same resampled test patients.",
      report.Table(rows=rows)])


def seeds_section(rows: Dict[str, List], cfg) -> report.Section:
  """The fine-tuning-over-seeds table (``cfg``: the DemoConfig)."""
  table = []
  for set_name, set_rows in rows.items():
    for r in set_rows:
      table.append({"eval set": set_name, "model": r.model,
                    "mean AUC over seeds [95% interval, seeds x test patients]":
                        report.format_ci(r.mean, r.lower, r.upper),
                    "per seed": ", ".join(f"{v:.3f}" for v in r.per_seed.values())})
  return report.Section("Fine-tuning over seeds (baseline vs REMEDIS)", blocks=[
      f"Both models fine-tuned on site A with seeds {list(cfg.finetune_seeds)} (the tables "
      "above use the first seed). Interval: bootstrap replicates drawing the seeds and the "
      "test patients with replacement; each replicate averages the drawn seeds' mean AUC on "
      f"the drawn patients ({cfg.num_bootstrap} replicates).",
      report.Table(rows=table)])
