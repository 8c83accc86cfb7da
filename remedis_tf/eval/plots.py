"""PNG figures for reports: data-efficiency curves, ROC curves, image grids.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, so no global backend
state and no display needed), rendered to bytes and written atomically through
``remedis_tf.io_utils`` (so ``gs://`` destinations work).
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from remedis_tf import io_utils
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.eval import data_efficiency as de


def _save(fig: Figure, out_png: str, dpi: int = 110) -> str:
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
  io_utils.atomic_write_bytes(out_png, buf.getvalue())
  return out_png


def plot_data_efficiency(agg: Sequence[Any], out_png: str, metric_name: str,
                         reference: Union[str, float, None] = "auto",
                         reference_model: str = "baseline", reference_fraction: float = 1.0,
                         headline: Optional[de.Headline] = None,
                         title: Optional[str] = None) -> str:
  """Metric vs label fraction (log x axis), mean with CI band per model.

  Args:
    agg: :func:`remedis_tf.eval.data_efficiency.aggregate` rows (raw rows are aggregated).
    out_png: destination path.
    metric_name: y-axis label.
    reference: "auto" draws a horizontal line at ``reference_model``'s mean at
      ``reference_fraction`` (if measured); a float draws it there; None draws none.
    headline: if given and reached, a dotted vertical line at its interpolated fraction.
    title: optional figure title.

  Returns:
    ``out_png``.
  """
  rows = de._aggregated(agg)  # pylint: disable=protected-access
  if not rows:
    raise DataError(f"no data-efficiency results to plot into {out_png}")
  fig = Figure(figsize=(6.0, 4.0))
  ax = fig.add_subplot(1, 1, 1)
  models = list(dict.fromkeys(r.model for r in rows))
  means = np.asarray([r.mean for r in rows], np.float64)
  # Metrics in [0, 1] (AUC, accuracy): with few seeds a t-interval can extend far past the
  # metric's range; clip the drawn band to it so the means stay readable.
  bounded = bool(np.all((means[np.isfinite(means)] >= 0) & (means[np.isfinite(means)] <= 1)))
  for i, model in enumerate(models):
    pts = sorted((r for r in rows if r.model == model), key=lambda r: r.fraction)
    x = np.asarray([r.fraction for r in pts])
    y = np.asarray([r.mean for r in pts])
    lo = np.asarray([r.lower for r in pts])
    hi = np.asarray([r.upper for r in pts])
    color = f"C{i}"
    ax.plot(x, y, "o-", color=color, label=model)
    if bounded:
      lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
      ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.2, linewidth=0)
      ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none",
                  ecolor=color, capsize=3)
  ref_value = None
  if reference == "auto":
    match = [r for r in rows if r.model == reference_model
             and math.isclose(r.fraction, reference_fraction, rel_tol=1e-9)]
    ref_value = match[0].mean if match else None
  elif reference is not None:
    ref_value = float(reference)
  if ref_value is not None and math.isfinite(ref_value):
    ax.axhline(ref_value, color="gray", linestyle="--", linewidth=1,
               label=f"{reference_model} @ {100 * reference_fraction:g}%")
  if headline is not None and headline.reached and headline.interpolated_fraction:
    ax.axvline(headline.interpolated_fraction, color="black", linestyle=":", linewidth=1,
               label=f"{headline.candidate_model} reaches it @ "
                     f"{100 * headline.interpolated_fraction:.3g}%")
  fractions = sorted({r.fraction for r in rows})
  ax.set_xscale("log")
  ax.xaxis.set_major_locator(FixedLocator(fractions))
  ax.xaxis.set_minor_locator(NullLocator())
  ax.set_xticklabels([f"{100 * f:g}%" for f in fractions])
  ax.set_xlabel("fraction of labelled training data")
  ax.set_ylabel(metric_name + (" (CI band clipped to [0, 1])" if bounded else ""))
  if bounded:
    ax.set_ylim(-0.02, 1.02)
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  if title:
    ax.set_title(title)
  return _save(fig, out_png)


def plot_roc_curves(curves: Mapping[str, Tuple[Any, Any, Optional[float]]], out_png: str,
                    title: str = "ROC") -> str:
  """ROC curves: ``{name: (fpr [M], tpr [M], auc or None)}``; a chance diagonal is drawn."""
  if not curves:
    raise DataError(f"no ROC curves to plot into {out_png}")
  fig = Figure(figsize=(4.5, 4.5))
  ax = fig.add_subplot(1, 1, 1)
  ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
  for name, (fpr, tpr, auc) in curves.items():
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    if fpr.shape != tpr.shape:
      raise DataError(f"ROC curve {name!r}: fpr {fpr.shape} and tpr {tpr.shape} differ")
    label = name if auc is None or not math.isfinite(auc) else f"{name} (AUC {auc:.3f})"
    ax.plot(fpr, tpr, label=label)
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel("1 - specificity (false positive rate)")
  ax.set_ylabel("sensitivity (true positive rate)")
  ax.set_aspect("equal")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  ax.set_title(title)
  return _save(fig, out_png)


def save_image_grid(images: Any, out_png: str, ncols: int = 8,
                    titles: Optional[Sequence[str]] = None) -> str:
  """Grid of images ``[N, H, W, 3]`` (or ``[N, H, W]`` / ``[N, H, W, 1]``) in [0, 1].

  Values are clipped to [0, 1]; ``titles`` (N strings) label each tile.
  """
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
    raise DataError(f"image grid needs [N, H, W, 3] (or 1 channel), got shape {images.shape}")
  if ncols < 1:
    raise ConfigError(f"ncols must be >= 1, got {ncols}")
  n = images.shape[0]
  if titles is not None and len(titles) != n:
    raise ConfigError(f"{len(titles)} titles for {n} images")
  ncols = min(ncols, n)
  nrows = math.ceil(n / ncols)
  fig = Figure(figsize=(1.6 * ncols, 1.6 * nrows + (0.3 * nrows if titles else 0)))
  images = np.clip(images, 0.0, 1.0)
  for i in range(nrows * ncols):
    ax = fig.add_subplot(nrows, ncols, i + 1)
    ax.axis("off")
    if i >= n:
      continue
    img = images[i]
    if img.shape[-1] == 1:
      ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
      ax.imshow(img, interpolation="nearest")
    if titles is not None:
      ax.set_title(str(titles[i]), fontsize=7)
  return _save(fig, out_png)
