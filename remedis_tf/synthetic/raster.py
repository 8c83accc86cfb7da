"""Pixel helpers shared by the chest and natural renderers and the writer."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def blob(x, y, cx, cy, sigma):
  """Unnormalised isotropic Gaussian bump centred at (cx, cy)."""
  return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma ** 2))


def quantise(img: np.ndarray, bit_depth: int) -> np.ndarray:
  """[0, 1] floats → uint8 (bit_depth 8) or uint16 (16), rounded, clipped."""
  scale = 65535.0 if bit_depth == 16 else 255.0
  dtype = np.uint16 if bit_depth == 16 else np.uint8
  return np.round(np.clip(img, 0.0, 1.0) * scale).astype(dtype)


def png_bytes(arr: np.ndarray) -> bytes:
  """uint8 gray/RGB or uint16 gray array → PNG bytes (deterministic encoder settings)."""
  im = Image.fromarray(arr)
  buf = io.BytesIO()
  im.save(buf, format="PNG", compress_level=6)
  return buf.getvalue()
