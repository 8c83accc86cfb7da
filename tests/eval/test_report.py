"""Markdown report building, number formatting, and the PNG writers."""

import os

import numpy as np
import pytest

from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import metrics, plots, report, task_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_formatting():
  assert report.format_ci(0.81234, 0.78, 0.84049) == "0.812 [0.780, 0.840]"
  assert report.format_ci(0.5, None, 0.6) == "0.500"
  assert report.format_ci(float("nan"), 0.1, 0.2) == "n/a"
  assert report.format_cell({"value": 0.9, "lower": 0.85, "upper": 0.95}) == "0.900 [0.850, 0.950]"
  assert report.format_cell((0.9, 0.85, 0.95)) == "0.900 [0.850, 0.950]"
  assert report.format_cell(np.int64(12)) == "12"
  assert report.format_cell(np.float32(0.5)) == "0.500"
  assert report.format_cell(None) == "n/a"
  assert report.format_cell("a|b") == "a\\|b"


def test_markdown_table_columns_and_missing():
  text = report.markdown_table([{"model": "baseline", "auc": 0.7}, {"model": "remedis", "n": 3}])
  lines = text.splitlines()
  assert lines[0] == "| model | auc | n |"
  assert lines[1] == "|---|---|---|"
  assert lines[2] == "| baseline | 0.700 | n/a |"
  assert lines[3] == "| remedis | n/a | 3 |"
  assert report.markdown_table([{"a": 1, "b": 2}], columns=["b"]).splitlines()[2] == "| 2 |"


def test_write_report_contains_rows_and_relative_images(tmp_path):
  out_dir = str(tmp_path / "run")
  fig = os.path.join(out_dir, "figs", "curve.png")
  rows = [{"model": "baseline", "fraction": "100%", "auc": {"value": 0.8, "lower": 0.78,
                                                            "upper": 0.82}},
          {"model": "remedis", "fraction": "10%", "auc": {"value": 0.812, "lower": 0.780,
                                                          "upper": 0.840}}]
  sections = [
      report.Section("Data efficiency", (
          "REMEDIS reaches the baseline at 10 %.",
          report.Table(rows, caption="Mean AUC over seeds"),
          report.Image(fig, caption="AUC vs fraction"),
          report.Section("Details", ("Sub-section text.",)))),
      {"title": "Dict section", "paragraphs": ["Plain paragraph."],
       "tables": [{"rows": [{"k": 1}]}], "images": ["relative.png"]},
  ]
  path = report.write_report(out_dir, sections, title="Demo report")
  assert path == os.path.join(out_dir, "report.md")
  text = open(path).read()
  assert text.startswith("# Demo report\n")
  assert "## Data efficiency" in text and "### Details" in text and "## Dict section" in text
  assert "| remedis | 10% | 0.812 [0.780, 0.840] |" in text
  assert "| baseline | 100% | 0.800 [0.780, 0.820] |" in text
  assert "![AUC vs fraction](figs/curve.png)" in text
  assert "(relative.png)" in text and "| 1 |" in text
  assert text.index("REMEDIS reaches") < text.index("| model |") < text.index("![AUC")
  # gs:// style paths under the output folder become relative too.
  assert report._relative_link("gs://b/run/figs/x.png", "gs://b/run") == "figs/x.png"
  with pytest.raises(ConfigError, match="unknown report block"):
    report.render_report([report.Section("x", (42,))])


def test_report_from_evaluate_predictions_rows(tmp_path):
  rng = np.random.default_rng(0)
  y = (rng.random((200, 2)) < 0.4).astype(float)
  s = rng.normal(size=(200, 2)) + y
  res = task_metrics.evaluate_predictions("multilabel", y, s, label_names=["a", "b"],
                                          operating_point=0.5, num_bootstrap=50)
  rows = [{"class": name, "auc": entry["auc"]} for name, entry in res["per_class"].items()]
  text = report.render_report([report.Section("ID", (report.Table(rows),))])
  a = res["per_class"]["a"]["auc"]
  assert f"| a | {a['value']:.3f} [{a['lower']:.3f}, {a['upper']:.3f}] |" in text


def test_plot_roc_curves_and_image_grid_write_pngs(tmp_path):
  rng = np.random.default_rng(1)
  y = (rng.random(100) < 0.5).astype(float)
  s = rng.normal(size=100) + y
  fpr, tpr, _ = metrics.roc_curve(y, s)
  roc_png = str(tmp_path / "roc.png")
  plots.plot_roc_curves({"remedis": (fpr, tpr, metrics.roc_auc(y, s)),
                         "baseline": (fpr, tpr, None)}, roc_png, "ROC")
  grid_png = str(tmp_path / "nested" / "grid.png")
  plots.save_image_grid(rng.random((5, 16, 16, 3)) * 1.2, grid_png, ncols=3,
                        titles=[f"view {i}" for i in range(5)])
  plots.save_image_grid(rng.random((2, 16, 16)), grid_png, ncols=4)  # grayscale
  for p in (roc_png, grid_png):
    data = open(p, "rb").read()
    assert data[:8] == PNG_MAGIC and len(data) > 500
  with pytest.raises(DataError, match="shape"):
    plots.save_image_grid(np.zeros((2, 8, 8, 4)), grid_png)
  with pytest.raises(ConfigError, match="titles"):
    plots.save_image_grid(np.zeros((2, 8, 8, 3)), grid_png, titles=["one"])
  with pytest.raises(DataError, match="fpr"):
    plots.plot_roc_curves({"x": ([0, 1], [0, 0.5, 1], None)}, roc_png)
