"""Single cases and the example grid of the docs (``data/synthetic_examples.png``)."""

from __future__ import annotations

import dataclasses
import io
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from remedis_tf import io_utils
from remedis_tf.synthetic.chest import (apply_site, layout, render_chest, sample_patients,
                                        sample_views)
from remedis_tf.synthetic.config import (FINDINGS, SyntheticConfig, natural_class_names,
                                         seed_streams)
from remedis_tf.synthetic.natural import render_natural
from remedis_tf.synthetic.raster import quantise


def render_case(site: str, labels: Sequence[bool], seed: int = 0, image_size: int = 64,
                lateral: bool = False, config: Optional[SyntheticConfig] = None,
                subtle: bool = False) -> np.ndarray:
  """Renders one image of one patient with the given findings, float32 ``[S, S]`` in [0, 1].

  The patient (anatomy, finding sizes/positions) depends only on ``seed``, so calling it
  twice with different ``labels`` shows exactly what each finding adds. Site shifts
  (including noise and markers, drawn from ``seed``) are those of ``config``'s site.
  """
  cfg = config or SyntheticConfig()
  cfg = dataclasses.replace(cfg, image_size=image_size, images_per_patient=(2, 2),
                            lateral_fraction=1.0 if lateral else 0.0,
                            subtle_fraction=1.0 if subtle else 0.0)
  shift = cfg.site(site)
  meta_rng, pixel_rng, _ = seed_streams(cfg, 100 + seed)
  pat = sample_patients(meta_rng, 1, shift, cfg, force_labels=np.asarray(labels, bool))
  views = sample_views(meta_rng, 1, cfg, fixed_first=True)
  idx = np.array([1 if lateral else 0])
  raw = render_chest(layout(pat, views, idx), image_size, shift.zoom)
  return apply_site(raw, shift, pixel_rng)[0]


def render_example_grid(out_png: str, config: Optional[SyntheticConfig] = None,
                        tile: int = 96, seed: int = 0) -> str:
  """Writes a PNG grid: rows = sites A/B/C (+ natural examples), columns = no finding,
  each finding alone, and a lateral view; returns ``out_png``."""
  cfg = config or SyntheticConfig()
  size = cfg.image_size
  cols = [("none", (0, 0, 0, 0), False)]
  cols += [(f, tuple(int(i == k) for i in range(4)), False) for k, f in enumerate(FINDINGS)]
  cols += [("lateral", (0, 0, 1, 1), False)]
  label_w, head_h, pad = 58, 16, 2
  n_rows = 4
  width = label_w + len(cols) * (tile + pad)
  height = head_h + n_rows * (tile + pad)
  canvas = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for c, (name, _, _) in enumerate(cols):
    draw.text((label_w + c * (tile + pad) + 2, 2), name if name != "lateral" else
              "lateral C+E", fill=(0, 0, 0))
  for r, site in enumerate("abc"):
    y0 = head_h + r * (tile + pad)
    draw.text((2, y0 + tile // 2 - 6), f"site {site.upper()}", fill=(0, 0, 0))
    for c, (name, labels, _) in enumerate(cols):
      img = render_case(site, labels, seed=seed, image_size=size, config=cfg,
                        lateral=(name == "lateral"))
      tile_img = Image.fromarray(quantise(img, 8)).resize((tile, tile), Image.NEAREST)
      canvas.paste(tile_img.convert("RGB"), (label_w + c * (tile + pad), y0))
  y0 = head_h + 3 * (tile + pad)
  draw.text((2, y0 + tile // 2 - 6), "natural", fill=(0, 0, 0))
  rng = np.random.Generator(np.random.PCG64(seed))
  n_nat = min(len(cols), cfg.natural_classes)
  ids = np.linspace(0, cfg.natural_classes - 1, n_nat).astype(int)
  nat = render_natural(ids, cfg.natural_classes, cfg.natural_size(), rng)
  names = natural_class_names(cfg.natural_classes)
  for c in range(n_nat):
    x0 = label_w + c * (tile + pad)
    canvas.paste(Image.fromarray(nat[c]).resize((tile, tile), Image.NEAREST), (x0, y0))
    draw.text((x0 + 2, y0 + 2), names[ids[c]], fill=(255, 255, 255))
  buf = io.BytesIO()
  canvas.save(buf, format="PNG", optimize=True)
  io_utils.atomic_write_bytes(out_png, buf.getvalue())
  return out_png
