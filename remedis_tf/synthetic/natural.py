"""The "natural" RGB image set standing in for ImageNet: shapes × colours on textured
backgrounds (one class per ``<colour>_<shape>`` name)."""

from __future__ import annotations

import numpy as np

from remedis_tf.synthetic.config import COLOURS, natural_class_names
from remedis_tf.synthetic.raster import blob


def _shape_mask(shape: str, x, y):
  r = np.sqrt(x ** 2 + y ** 2)
  if shape == "circle":
    return r < 1.0
  if shape == "ring":
    return (r < 1.0) & (r > 0.58)
  if shape == "square":
    return np.maximum(np.abs(x), np.abs(y)) < 0.78
  if shape == "triangle":
    ok = np.ones_like(x, bool)
    for ang in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
      ok &= (x * np.cos(ang) + y * np.sin(ang)) < 0.5
    return ok
  if shape == "cross":
    return (((np.abs(x) < 0.3) & (np.abs(y) < 0.95)) |
            ((np.abs(y) < 0.3) & (np.abs(x) < 0.95)))
  if shape == "star":
    theta = np.arctan2(y, x)
    return r < 0.55 + 0.42 * np.cos(5 * theta)
  raise ValueError(shape)


def render_natural(class_ids: np.ndarray, num_classes: int, size: int,
                   rng: np.random.Generator) -> np.ndarray:
  """uint8 ``[n, size, size, 3]`` images of the given classes (2× supersampled)."""
  names = natural_class_names(num_classes)
  colours = dict(COLOURS)
  ss = 2 * size
  grid = (np.arange(ss) + 0.5) / ss * 2.0 - 1.0
  gx, gy = np.meshgrid(grid, grid)
  out = np.empty((len(class_ids), size, size, 3), np.uint8)
  for i, cid in enumerate(class_ids):
    colour_name, shape = names[cid].split("_", 1)
    # Background: muted tint with a random texture (stripes, checks or smooth lumps).
    base = rng.uniform(0.25, 0.75) + rng.uniform(-0.08, 0.08, 3)
    kind = rng.integers(0, 3)
    if kind == 0:
      ang, freq = rng.uniform(0, np.pi), rng.uniform(2, 7)
      tex = np.sin(2 * np.pi * freq * (gx * np.cos(ang) + gy * np.sin(ang)))
    elif kind == 1:
      freq = rng.uniform(2, 6)
      tex = np.sign(np.sin(np.pi * freq * gx) * np.sin(np.pi * freq * gy))
    else:
      tex = sum(rng.uniform(-1, 1) * blob(gx, gy, *rng.uniform(-1, 1, 2), rng.uniform(0.2, 0.5))
                for _ in range(4))
    img = base[None, None, :] + rng.uniform(0.04, 0.12) * tex[..., None]
    # Foreground shape: random pose and size, jittered class colour, optional texture.
    rad, rot = rng.uniform(0.35, 0.7), rng.uniform(0, 2 * np.pi)
    cx, cy = rng.uniform(-0.95 + rad, 0.95 - rad, 2)
    xr = (np.cos(rot) * (gx - cx) + np.sin(rot) * (gy - cy)) / rad
    yr = (-np.sin(rot) * (gx - cx) + np.cos(rot) * (gy - cy)) / rad
    mask = _shape_mask(shape, xr, yr)[..., None]
    colour = np.clip(np.asarray(colours[colour_name]) * rng.uniform(0.8, 1.1)
                     + rng.uniform(-0.06, 0.06, 3), 0, 1)
    shade = 1.0 + rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(1, 4) * xr)[..., None]
    img = np.where(mask, colour[None, None, :] * shade, img)
    img = img.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    img += rng.normal(0, 0.02, img.shape)
    out[i] = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
  return out
