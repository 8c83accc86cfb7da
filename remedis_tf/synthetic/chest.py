"""Chest-radiograph-like images: patient and view sampling, vectorised rendering of the
anatomy and findings, and each site's acquisition shift.

Metadata (patients, views) is drawn from the split's metadata stream, pixel noise and
markers from its pixel stream, in a fixed order over fixed ``CHUNK``-sized batches: that
order is part of the benchmark's definition (byte-identical output for a config).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from remedis_tf.synthetic.config import CHUNK, SiteShift, SyntheticConfig
from remedis_tf.synthetic.raster import blob

_TEXTURE_WAVES = 12  # plane waves in each patient's texture (SyntheticConfig.patient_texture)


# ---------------------------------------------------------------------------------------
# Patient sampling (metadata only; cheap and independent of the image size).
# ---------------------------------------------------------------------------------------


def _sample_labels(rng: np.random.Generator, n: int, prevalence: Sequence[float],
                   eff_rr: float, opa_rr: float) -> np.ndarray:
  """Bool ``[n, 4]`` labels whose marginals match ``prevalence``.

  Cardiomegaly and Nodule are drawn independently; Effusion depends on Cardiomegaly and
  Opacity on Effusion through relative risks, with the baseline rates solved so the
  marginal prevalence stays the configured one (capped at 1).
  """
  p_opa, p_nod, p_card, p_eff = prevalence
  u = rng.random((n, 4))
  card = u[:, 2] < p_card
  nod = u[:, 1] < p_nod
  base_e = p_eff / (1.0 + p_card * (eff_rr - 1.0))
  eff = u[:, 3] < np.where(card, min(1.0, eff_rr * base_e), base_e)
  base_o = p_opa / (1.0 + p_eff * (opa_rr - 1.0))
  opa = u[:, 0] < np.where(eff, min(1.0, opa_rr * base_o), base_o)
  return np.stack([opa, nod, card, eff], axis=1)


def sample_patients(rng: np.random.Generator, n: int, shift: SiteShift,
                    cfg: SyntheticConfig, force_labels: Optional[np.ndarray] = None,
                    allow_subtle: bool = True) -> Dict[str, np.ndarray]:
  """Per-patient anatomy, finding parameters and labels (every array has leading dim n).

  Finding parameters are drawn for every patient whatever its labels, so toggling a label
  (``force_labels``) changes only that finding in the rendered images.
  """
  u = lambda lo, hi, *shape: rng.uniform(lo, hi, (n,) + shape)  # noqa: E731
  labels = _sample_labels(rng, n, shift.prevalence, cfg.effusion_cardiomegaly_rr,
                          cfg.opacity_effusion_rr)
  if force_labels is not None:
    labels = np.broadcast_to(np.asarray(force_labels, bool), (n, 4)).copy()
  subtle = rng.random((n, 4)) < (cfg.subtle_fraction if allow_subtle else 0.0)
  p = {
      "labels": labels,
      "subtle": subtle,
      # Anatomy (anatomical coordinates: x, y in about [-1, 1], y pointing down).
      "body_w": u(0.78, 0.9), "body_h": u(1.08, 1.2), "body_cy": u(0.08, 0.16),
      "tissue": u(0.42, 0.52),
      "lung_cx": u(0.36, 0.42), "lung_cy": u(-0.12, -0.02),
      "lung_a": u(0.25, 0.3), "lung_b": u(0.48, 0.58), "lung_dark": u(0.26, 0.34),
      "heart_w": np.clip(rng.normal(0.29, 0.02, n), 0.24, 0.33), "heart_h": u(0.21, 0.26),
      "heart_cx": u(0.07, 0.13), "heart_amp": u(0.06, 0.12),
      "spine_amp": u(0.08, 0.14),
      "rib_freq": u(4.2, 5.4), "rib_phase": u(0.0, 1.0), "rib_curv": u(0.4, 0.8),
      "rib_amp": u(0.03, 0.06),
      # Confounders: smooth lumps anywhere in the chest, and an optional nipple shadow.
      "lump_x": u(-0.7, 0.7, 4), "lump_y": u(-0.7, 0.8, 4), "lump_s": u(0.1, 0.25, 4),
      "lump_amp": u(-0.04, 0.04, 4),
      "nipple_on": rng.random(n) < 0.3, "nipple_side": rng.integers(0, 2, n),
      "nipple_u": u(0.2, 0.6), "nipple_v": u(0.35, 0.6), "nipple_amp": u(0.05, 0.1),
  }
  s = subtle
  # Opacity: three hazy blobs in one zone of one lung.
  p["opa_side"] = rng.integers(0, 2, n)
  zone = np.where(rng.random(n) < 0.5, -0.35, 0.35)
  p["opa_u"] = u(-0.35, 0.35)[:, None] + u(-0.3, 0.3, 3)
  p["opa_v"] = (zone + u(-0.15, 0.15))[:, None] + u(-0.25, 0.25, 3)
  p["opa_s"] = u(0.1, 0.2, 3)
  p["opa_amp"] = np.where(s[:, 0], u(0.05, 0.09), u(0.1, 0.22))[:, None] * u(0.6, 1.0, 3)
  # Nodule: one small focal blob inside a lung field.
  p["nod_side"] = rng.integers(0, 2, n)
  radius = np.sqrt(u(0.0, 1.0)) * 0.7
  angle = u(0.0, 2 * np.pi)
  p["nod_u"], p["nod_v"] = radius * np.cos(angle), radius * np.sin(angle)
  p["nod_s"] = np.where(s[:, 1], u(0.025, 0.035), u(0.035, 0.06))
  p["nod_amp"] = np.where(s[:, 1], u(0.14, 0.22), u(0.25, 0.45))
  # Cardiomegaly: heart silhouette widened (and a little taller).
  p["card_scale"] = np.where(s[:, 2], u(1.2, 1.3), u(1.35, 1.65))
  # Effusion: fluid filling the lung base(s) with a lateral meniscus.
  sides = rng.integers(0, 3, n)  # 0 image-left, 1 image-right, 2 both
  p["eff_sides"] = np.stack([sides != 1, sides != 0], axis=1)
  p["eff_depth"] = np.where(s[:, 3], u(0.08, 0.15), u(0.18, 0.4))[:, None] * u(0.85, 1.0, 2)
  p["eff_meniscus"] = u(0.06, 0.16, 2)
  p["eff_density"] = np.where(s[:, 3], u(0.5, 0.7), u(0.75, 1.0))
  # Per-patient texture: _TEXTURE_WAVES plane waves, 2–6 cycles per anatomical unit
  # (period ≈ 5–16 px at 64 px), random direction and phase; amplitudes scaled so the
  # texture's RMS is cfg.patient_texture. Drawn last so the draws above keep their values.
  if cfg.patient_texture > 0:
    freq, direction = u(2.0, 6.0, _TEXTURE_WAVES), u(0.0, np.pi, _TEXTURE_WAVES)
    p["tex_fx"], p["tex_fy"] = freq * np.cos(direction), freq * np.sin(direction)
    p["tex_phase"] = u(0.0, 2 * np.pi, _TEXTURE_WAVES)
    weights = u(0.5, 1.0, _TEXTURE_WAVES)
    p["tex_amp"] = weights * cfg.patient_texture * np.sqrt(
        2.0 / np.sum(weights ** 2, axis=1, keepdims=True))
  return p


def sample_views(rng: np.random.Generator, n_patients: int, cfg: SyntheticConfig,
                 fixed_first: bool = False) -> Dict[str, np.ndarray]:
  """Per-image view parameters; images are ordered patient-major."""
  lo, hi = cfg.images_per_patient
  counts = rng.integers(lo, hi + 1, n_patients)
  patient = np.repeat(np.arange(n_patients), counts)
  view_index = np.concatenate([np.arange(c) for c in counts]) if n_patients else np.zeros(0, int)
  m = len(patient)
  first = view_index == 0
  lateral = (~first) & (rng.random(m) < cfg.lateral_fraction)
  jitter = np.where(first, 0.3, cfg.later_view_jitter)
  if fixed_first:
    jitter = np.where(first, 0.0, jitter)
  return {
      "patient": patient, "view_index": view_index, "lateral": lateral,
      "rot": np.deg2rad(rng.uniform(-10, 10, m)) * jitter,
      "scale": 1.0 + rng.uniform(-0.1, 0.1, m) * jitter,
      "tx": rng.uniform(-0.1, 0.1, m) * jitter, "ty": rng.uniform(-0.1, 0.1, m) * jitter,
      "gain": 1.0 + rng.uniform(-0.15, 0.15, m) * jitter,
  }


# ---------------------------------------------------------------------------------------
# Rendering (vectorised over a batch of images).
# ---------------------------------------------------------------------------------------


def _sigmoid(z):
  return 0.5 * (1.0 + np.tanh(0.5 * z))


def _soft_ellipse(x, y, cx, cy, a, b, power=2.0, edge=0.03):
  """Soft indicator of a (super-)ellipse; ``edge`` is the ramp width in coordinate units."""
  d = np.abs((x - cx) / a) ** power + np.abs((y - cy) / b) ** power
  r = d ** (1.0 / power)
  return _sigmoid((1.0 - r) * np.minimum(a, b) / edge)


def layout(pat: Dict[str, np.ndarray], views: Dict[str, np.ndarray],
           idx: np.ndarray) -> Dict[str, np.ndarray]:
  """Per-image anatomical layout for images ``idx``: finding positions become coordinates.

  Frontal: two lungs at ±lung_cx, heart right of the midline, spine at x = 0.
  Lateral: one lung field, heart anterior (left), spine posterior (right); lung-relative
  finding positions are mapped into that single field.
  """
  pi = views["patient"][idx]
  g = {k: v[pi] for k, v in pat.items()}
  lat = views["lateral"][idx]
  n = len(idx)
  L = {"lateral": lat}
  for k in ("rot", "scale", "tx", "ty", "gain"):
    L[k] = views[k][idx]
  for k in ("body_w", "body_h", "body_cy", "tissue", "lung_dark", "heart_amp", "spine_amp",
            "rib_freq", "rib_phase", "rib_curv", "rib_amp", "lump_x", "lump_y", "lump_s",
            "lump_amp"):
    L[k] = g[k]
  for k in ("tex_fx", "tex_fy", "tex_phase", "tex_amp"):
    if k in g:
      L[k] = g[k]
  lab = g["labels"]
  # Lungs (2 slots; the lateral view uses slot 0 only).
  lcx = np.stack([-g["lung_cx"], g["lung_cx"]], 1)
  L["lung_cx"] = np.where(lat[:, None], np.array([[0.02, 0.0]]), lcx)
  L["lung_cy"] = np.repeat(g["lung_cy"][:, None], 2, 1)
  L["lung_a"] = np.where(lat[:, None], np.array([[0.52, 1.0]]),
                         np.repeat(g["lung_a"][:, None], 2, 1))
  L["lung_b"] = np.repeat(g["lung_b"][:, None], 2, 1)
  L["lung_on"] = np.where(lat[:, None], np.array([[1.0, 0.0]]), 1.0)
  L["lat_sign"] = np.where(lat[:, None], np.array([[1.0, 0.0]]), np.array([[-1.0, 1.0]]))
  # Heart.
  card = np.where(lab[:, 2], g["card_scale"], 1.0)
  L["heart_a"] = g["heart_w"] * card * np.where(lat, 0.95, 1.0)
  L["heart_b"] = g["heart_h"] * (1.0 + 0.25 * (card - 1.0)) * np.where(lat, 1.1, 1.0)
  # An enlarged heart grows mostly towards the patient's left (image right) / posteriorly.
  grow = L["heart_a"] - g["heart_w"] * np.where(lat, 0.95, 1.0)
  L["heart_cx"] = np.where(lat, -0.3, g["heart_cx"]) + 0.4 * grow
  L["heart_cy"] = g["lung_cy"] + g["lung_b"] - 0.5 * L["heart_b"]
  L["spine_x"] = np.where(lat, 0.62, 0.0)
  L["spine_w"] = np.where(lat, 0.1, 0.07)

  def to_xy(side, uu, vv):
    """Lung-relative (u, v) in slot ``side`` → anatomical (x, y)."""
    slot = np.where(lat, 0, side)
    rows = np.arange(n)
    cx = L["lung_cx"][rows, slot]
    a = L["lung_a"][rows, slot]
    cy = L["lung_cy"][rows, slot]
    b = L["lung_b"][rows, slot]
    if uu.ndim == 2:
      cx, a, cy, b = cx[:, None], a[:, None], cy[:, None], b[:, None]
    return cx + uu * a, cy + vv * b, slot

  L["opa_x"], L["opa_y"], L["opa_slot"] = to_xy(g["opa_side"], g["opa_u"], g["opa_v"])
  L["opa_s"] = g["opa_s"]
  L["opa_amp"] = g["opa_amp"] * lab[:, 0:1]
  L["nod_x"], L["nod_y"], _ = to_xy(g["nod_side"], g["nod_u"], g["nod_v"])
  L["nod_x"] = np.where(lat, L["lung_cx"][:, 0] + g["nod_u"] * 0.35, L["nod_x"])
  L["nod_s"] = g["nod_s"]
  L["nod_amp"] = g["nod_amp"] * lab[:, 1]
  nip_u = np.where(g["nipple_side"] == 0, -g["nipple_u"], g["nipple_u"])
  L["nip_x"], L["nip_y"], _ = to_xy(g["nipple_side"], nip_u, g["nipple_v"])
  L["nip_amp"] = g["nipple_amp"] * g["nipple_on"] * (~lat)
  eff_on = g["eff_sides"] & lab[:, 3:4]
  L["eff_on"] = np.where(lat[:, None], np.stack([eff_on.any(1), np.zeros(n, bool)], 1),
                         eff_on).astype(np.float64)
  depth = np.where(lat[:, None], g["eff_depth"].max(1, keepdims=True), g["eff_depth"])
  L["eff_depth"] = depth
  L["eff_meniscus"] = g["eff_meniscus"]
  L["eff_density"] = g["eff_density"]
  return L


def render_chest(L: Dict[str, np.ndarray], size: int, zoom: float) -> np.ndarray:
  """Anatomy + findings → float32 ``[n, size, size]`` (un-shifted intensities ≈ [0, 1])."""
  n = len(L["rot"])
  grid = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
  gx, gy = np.meshgrid(grid, grid)
  e = lambda v: np.asarray(v, np.float64).reshape(n, 1, 1)  # noqa: E731
  z = e(L["scale"]) * zoom
  c, s = np.cos(e(L["rot"])), np.sin(e(L["rot"]))
  dx, dy = gx[None] - e(L["tx"]), gy[None] - e(L["ty"])
  x = (c * dx + s * dy) / z
  y = (-s * dx + c * dy) / z

  body = _soft_ellipse(x, y, 0.0, e(L["body_cy"]), e(L["body_w"]), e(L["body_h"]), edge=0.04)
  img = 0.04 + body * (e(L["tissue"]) - 0.04)
  img += body * e(L["spine_amp"]) * _sigmoid((e(L["spine_w"]) - np.abs(x - e(L["spine_x"])))
                                             / 0.02)
  for j in range(4):
    img += body * e(L["lump_amp"][:, j]) * blob(x, y, e(L["lump_x"][:, j]),
                                                e(L["lump_y"][:, j]), e(L["lump_s"][:, j]))
  heart = _soft_ellipse(x, y, e(L["heart_cx"]), e(L["heart_cy"]), e(L["heart_a"]),
                        e(L["heart_b"]), edge=0.03)
  air = np.zeros_like(x)
  ribs_vis = np.zeros_like(x)
  lung_raw = []
  for k in range(2):
    cx, cy = e(L["lung_cx"][:, k]), e(L["lung_cy"][:, k])
    a, b = e(L["lung_a"][:, k]), e(L["lung_b"][:, k])
    lung = _soft_ellipse(x, y, cx, cy, a, b, power=2.6, edge=0.025) * e(L["lung_on"][:, k])
    lung_raw.append(lung)
    # Fluid level above the lung base, rising towards the lateral wall (meniscus).
    lateral_pos = np.clip((x - cx) / a * e(L["lat_sign"][:, k]), 0.0, None)
    surface = cy + b - 2.0 * b * (e(L["eff_depth"][:, k])
                                  + e(L["eff_meniscus"][:, k]) * lateral_pos ** 2)
    fluid = _sigmoid((y - surface) / 0.02) * e(L["eff_on"][:, k])
    aerated = lung * (1.0 - e(L["eff_density"]) * fluid)
    air += aerated
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (e(L["rib_freq"]) * (y + e(L["rib_curv"]) *
                                                               (x - cx) ** 2)
                                           + e(L["rib_phase"])))
    ribs_vis += aerated * ribs ** 3
    img += 0.04 * lung * fluid
  img -= e(L["lung_dark"]) * air * (1.0 - 0.95 * heart)
  img += e(L["heart_amp"]) * heart * body
  img += e(L["rib_amp"]) * ribs_vis
  mask = np.where(e(L["opa_slot"]) == 0, lung_raw[0], lung_raw[1])
  for j in range(3):
    img += e(L["opa_amp"][:, j]) * mask * blob(x, y, e(L["opa_x"][:, j]), e(L["opa_y"][:, j]),
                                               e(L["opa_s"][:, j]))
  lung_any = np.clip(lung_raw[0] + lung_raw[1], 0.0, 1.0)
  img += e(L["nod_amp"]) * (0.3 + 0.7 * lung_any) * blob(x, y, e(L["nod_x"]), e(L["nod_y"]),
                                                         e(L["nod_s"]))
  img += e(L["nip_amp"]) * blob(x, y, e(L["nip_x"]), e(L["nip_y"]), 0.03)
  if "tex_amp" in L:  # the patient's own texture, inside the body
    texture = sum(e(L["tex_amp"][:, j]) * np.cos(
        2 * np.pi * (e(L["tex_fx"][:, j]) * x + e(L["tex_fy"][:, j]) * y) + e(L["tex_phase"][:, j]))
        for j in range(L["tex_amp"].shape[1]))
    img += body * texture
  img *= e(L["gain"])
  return img.astype(np.float32)


def _gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of ``[n, h, w]`` with reflect padding."""
  if sigma <= 0:
    return images
  r = max(1, int(np.ceil(3 * sigma)))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k = (k / k.sum()).astype(np.float32)
  h, w = images.shape[1:]
  p = np.pad(images, ((0, 0), (r, r), (0, 0)), mode="reflect")
  out = sum(k[i] * p[:, i:i + h, :] for i in range(2 * r + 1))
  p = np.pad(out, ((0, 0), (0, 0), (r, r)), mode="reflect")
  return sum(k[i] * p[:, :, i:i + w] for i in range(2 * r + 1)).astype(np.float32)


# 3×5 glyphs for burned-in laterality markers.
_GLYPHS = {
    "L": ["100", "100", "100", "100", "111"],
    "R": ["110", "101", "110", "101", "101"],
}


def _burn_markers(img: np.ndarray, rng: np.random.Generator) -> None:
  """Draws a laterality letter and a row of text-like blocks into ``img`` (in place)."""
  size = img.shape[0]
  cell = max(1, size // 40)
  glyph = _GLYPHS["L" if rng.random() < 0.5 else "R"]
  corner = rng.integers(0, 4)
  gh, gw = 5 * cell, 3 * cell
  margin = max(1, size // 32)
  top = margin if corner < 2 else size - margin - gh
  left = margin if corner % 2 == 0 else size - margin - gw
  value = rng.uniform(0.9, 1.0)
  for r, row in enumerate(glyph):
    for cc, bit in enumerate(row):
      if bit == "1":
        img[top + r * cell:top + (r + 1) * cell, left + cc * cell:left + (cc + 1) * cell] = value
  # A "text line" of blocks along the opposite edge.
  n_blocks = int(rng.integers(3, 8))
  bh = max(1, size // 32)
  row0 = size - margin - bh if corner < 2 else margin
  col = int(rng.integers(margin, max(margin + 1, size // 3)))
  for _ in range(n_blocks):
    bw = int(rng.integers(1, 3)) * max(1, size // 40)
    if col + bw >= size - margin:
      break
    img[row0:row0 + bh, col:col + bw] = value
    col += bw + max(1, size // 64)


def apply_site(images: np.ndarray, shift: SiteShift, rng: np.random.Generator) -> np.ndarray:
  """Acquisition shift: blur → tone curve → noise → inversion → markers; clipped to [0, 1]."""
  out = _gaussian_blur(images, shift.blur_sigma)
  out = np.clip(out, 0.0, 1.0) ** shift.gamma
  out = (out - 0.5) * shift.contrast + 0.5 + shift.offset
  out = out + rng.normal(0.0, 1.0, out.shape).astype(np.float32) * shift.noise_std
  out = np.clip(out, 0.0, 1.0)
  if shift.invert:
    out = 1.0 - out
  has_marker = rng.random(len(out)) < shift.marker_prob
  for i in np.flatnonzero(has_marker):
    _burn_markers(out[i], rng)
  return out.astype(np.float32)


def render_split_images(pat, views, shift: SiteShift, size: int,
                        rng: np.random.Generator):
  """Yields (start, quantised images) chunks for all images of a split."""
  m = len(views["patient"])
  for start in range(0, m, CHUNK):
    idx = np.arange(start, min(m, start + CHUNK))
    raw = render_chest(layout(pat, views, idx), size, shift.zoom)
    yield start, apply_site(raw, shift, rng)
