"""Reliability diagrams (PNG) from :func:`remedis_tf.eval.calibration.calibration_report`.

One panel per finding (multi-class: the top-label panel): observed positive rate vs mean
predicted probability per non-empty bin, before (T = 1) and after temperature scaling,
the diagonal of perfect calibration, and the ECE of each curve in the legend. Drawn like
:mod:`remedis_tf.eval.plots` (Agg canvas, atomic write, ``gs://`` works).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from matplotlib.figure import Figure

from remedis_tf.errors import DataError
from remedis_tf.eval import plots


def _curve(bins: Mapping[str, Any]):
  pts = [(p, f) for p, f in zip(bins["mean_probability"], bins["fraction_positive"])
         if p is not None]
  return [p for p, _ in pts], [f for _, f in pts]


def _ece_text(ci: Optional[Mapping[str, Any]]) -> str:
  if not ci or ci.get("value") is None:
    return "n/a"
  return f"{ci['value']:.3f}"


def plot_reliability(report: Mapping[str, Any], out_png: str, title: str = "",
                     ncols: int = 4) -> str:
  """Writes the reliability diagram of one evaluation set; returns ``out_png``."""
  targets = {k: v for k, v in report.get("targets", {}).items() if v.get("bins_before")}
  if not targets:
    raise DataError(f"no calibration curves to plot into {out_png}")
  ncols = max(1, min(ncols, len(targets)))
  nrows = math.ceil(len(targets) / ncols)
  fig = Figure(figsize=(3.2 * ncols, 3.3 * nrows + (0.3 if title else 0)), layout="constrained")
  for i, (name, entry) in enumerate(targets.items()):
    ax = fig.add_subplot(nrows, ncols, i + 1)
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
    x, y = _curve(entry["bins_before"])
    ax.plot(x, y, "o-", color="C0", markersize=3,
            label=f"T = 1 (ECE {_ece_text(entry['ece_before'])})")
    if entry.get("bins_after"):
      x, y = _curve(entry["bins_after"])
      ax.plot(x, y, "s-", color="C1", markersize=3,
              label=f"scaled (ECE {_ece_text(entry['ece_after'])})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{name} (n={entry['num_examples']})", fontsize=9)
    ax.set_xlabel("mean predicted probability", fontsize=8)
    ax.set_ylabel("observed fraction positive", fontsize=8)
    ax.legend(loc="lower right", fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return plots._save(fig, out_png)  # pylint: disable=protected-access
