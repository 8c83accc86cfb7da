"""The README's main command in --quick mode, end to end, through the real binary."""

import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
  # Running again resumes: nothing is retrained, the report is rewritten.
  proc2 = subprocess.run([sys.executable, "-m", "experiments.demo", "--quick",
                          f"--output_dir={out}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
  assert proc2.returncode == 0, proc2.stderr[-3000:]
  assert "[train] step" not in proc2.stdout
  assert "[done] run already at step" in proc2.stdout
