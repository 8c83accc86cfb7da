"""The README's main command in --quick mode, end to end, through the real binary; a
second run in a fresh folder must write exactly the same numbers (determinism on CPU)."""

import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Written numbers that are wall-clock facts, not results: timestamps and stage timings.
_VOLATILE_KEYS = ("finished_at",)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _numbers_written(out):
  """{relative file: [numbers in order]} over every JSON/CSV/Markdown file the demo wrote
  (outside the generated data), with the run folder's own path and timings removed."""
  found = {}
  for root, _, files in os.walk(out):
    for name in sorted(files):
      path = os.path.join(root, name)
      rel = os.path.relpath(path, out)
      if rel.startswith("data" + os.sep) or not name.endswith((".json", ".csv", ".md")):
        continue
      text = open(path).read().replace(str(out), "OUT")
      if name.endswith(".json"):
        text = re.sub(r'"(%s)": "[^"]*"' % "|".join(_VOLATILE_KEYS), "", text)
      if name == "report.md":
        # The header's date/wall time and the per-stage seconds table are timings.
        text = re.sub(r"Measured on .*?mode:", "", text, flags=re.S)
        text = text.split("## Time per stage")[0]
      found[rel] = _NUMBER.findall(text)
  return found


def test_quick_demo_writes_a_consistent_report(tmp_path):
  out = tmp_path / "demo"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "experiments.demo", "--quick",
                         f"--output_dir={out}"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report_path = out / "report.md"
  assert f"Report: {report_path}" in proc.stdout
  report = report_path.read_text()
  for heading in ("## Data", "## Stage 1", "## ID and zero-shot OOD",
                  "## Data-efficient generalisation", "## Calibration", "## Subgroups",
                  "## Time per stage"):
    assert heading in report
  # Calibration and subgroup numbers are the ones the evaluation wrote.
  cal = json.loads((out / "eval" / "remedis" / "id_site_a_calibration.json").read_text())
  assert f"{cal['targets']['Opacity']['ece_before']['value']:.3f}" in report
  groups = json.loads((out / "eval" / "baseline" / "ood_site_b_subgroups.json").read_text())
  assert [g["column"] for g in groups] == ["Sex", "Age"]
  assert set(groups[0]["groups"]) <= {"F", "M"}
  assert "| baseline | ood_site_b | Age | [50, 65) |" in report
  # Every image the report links exists and is a PNG.
  links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
  assert len(links) >= 5
  for link in links:
    with open(out / link, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", link
  # The ID/OOD numbers in the report are the ones the evaluation wrote.
  for model in ("baseline", "remedis"):
    summary = json.loads((out / "eval" / model / "summary.json").read_text())
    value = summary["sets"]["ood_site_b"]["value"]
    assert f"{value:.3f}" in report
  # The data-efficiency table has a row per (model, fraction).
  table = (out / "data_efficiency" / "table.csv").read_text()
  assert "baseline" in table and "remedis" in table
  # New report sections: frozen stage-1 vs stage-2 features, fine-tuning over seeds.
  assert "## Frozen-feature evaluation: stage 1 vs stage 2" in report
  assert "## Fine-tuning over seeds" in report
  frozen = json.loads((out / "eval" / "frozen_features.json").read_text())
  assert set(frozen["models"]) == {"stage1", "stage2"}
  for method in ("linear_probe", "knn"):
    entry = frozen["models"]["stage2"][method]
    assert f"{entry['value']:.3f}" in report
  seeds = json.loads((out / "eval" / "finetune_seeds.json").read_text())
  assert [len(r["per_seed"]) for r in seeds["id_site_a"]] == [2, 2]
  # findings.json (issue 24): every kind of paired finding, verdicts that agree with their
  # intervals, selection on validation; shown first in the report.
  found = json.loads((out / "findings.json").read_text())
  assert found["protocol"]["selection"] == "validation"
  names = [f["name"] for f in found["findings"]]
  for prefix in ("frozen_site_a_", "id_site_a_finetune", "ood_site_b_zero_shot",
                 "ood_site_c_zero_shot", "efficiency_site_b_finetune_f",
                 "efficiency_site_b_probe_f", "efficiency_site_b_finetune_headline"):
    assert any(n.startswith(prefix) for n in names), prefix
  for f in found["findings"]:
    lo, hi = f["interval"]
    want = ("better" if lo is not None and lo > 0 else
            "worse" if hi is not None and hi < 0 else "no difference")
    assert f["verdict"] == want, f
    assert f"{f['estimate']:+.3f}" in report
  assert found["baseline_learning_curve"]["from_fraction"] == 0.5
  assert report.index("## Findings") < report.index("## Data")
  # Determinism: the same command in a fresh folder writes the same numbers everywhere,
  # and training one fine-tune at a time (--workers=1) gives what two worker processes
  # side by side gave in the first run (the default on a machine of 2+ cores).
  out2 = tmp_path / "demo2"
  proc_b = subprocess.run([sys.executable, "-m", "experiments.demo", "--quick", "--workers=1",
                           f"--output_dir={out2}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert proc_b.returncode == 0, proc_b.stderr[-3000:]
  first, second = _numbers_written(out), _numbers_written(out2)
  assert sorted(first) == sorted(second)
  assert sum(len(v) for v in first.values()) > 1000
  for rel in first:
    assert first[rel] == second[rel], rel
  # Running again resumes: nothing is retrained, the report is rewritten.
  proc2 = subprocess.run([sys.executable, "-m", "experiments.demo", "--quick",
                          f"--output_dir={out}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
  assert proc2.returncode == 0, proc2.stderr[-3000:]
  assert "[train] step" not in proc2.stdout
  assert "[done] run already at step" in proc2.stdout
