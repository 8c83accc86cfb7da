"""Embedded synthetic multi-site chest-radiograph benchmark (a stand-in for real data).

Nothing real can be downloaded in the demo environment, so this module draws a small
benchmark and writes it to disk in the same formats the real readers take: grayscale PNG
files plus CheXpert-style CSV manifests, and an RGB "natural" image set (shapes × colours)
standing in for ImageNet. The images have NO clinical meaning; they only reproduce the
structure of the REMEDIS study (source site with a large unlabelled pool, two shifted
target sites, several images per patient for MICLe, multi-label findings with uncertain
and missing labels).

Layout written under ``out_dir`` (paths inside CSVs are relative to ``out_dir``)::

  site_a/{unlabelled,train,valid,test}.csv   site_b/{train,test}.csv
  site_c/{train,test}.csv                    natural/{train,test}.csv
  benchmark.json
  site_x/<split>/patientNNNNN/study1/view<k>_<frontal|lateral>.png
  natural/<split>/<class_name>/imgNNNNN.png

Everything is a pure function of :class:`SyntheticConfig` (including its seed): the same
config gives byte-identical CSVs and PNGs. See ``data/SYNTHETIC.md`` for how each finding
and each site shift is rendered and the measured sizes and prevalences.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
import tensorflow as tf

from remedis_tf import configs, io_utils
from remedis_tf.errors import ConfigError, DataError

GENERATOR_VERSION = "1.2"
BENCHMARK_FILE = "benchmark.json"

FINDINGS = ("Opacity", "Nodule", "Cardiomegaly", "Effusion")
# Demographic look-alike columns for subgroup reports (metadata only: drawn from their own
# seed stream, so images, labels and every other column are those of version 1.1).
SUBGROUP_COLUMNS = ("Sex", "Age")
MEDICAL_COLUMNS = ("Path", "Patient", "Site", "Frontal/Lateral") + FINDINGS + SUBGROUP_COLUMNS
UNLABELLED_COLUMNS = ("Path", "Patient", "Site", "Frontal/Lateral") + SUBGROUP_COLUMNS
NATURAL_COLUMNS = ("Path", "Label")

SHAPES = ("circle", "square", "triangle", "cross", "ring", "star")
COLOURS = (("red", (0.86, 0.16, 0.14)), ("green", (0.16, 0.68, 0.22)),
           ("blue", (0.16, 0.30, 0.90)), ("yellow", (0.92, 0.84, 0.16)),
           ("purple", (0.58, 0.20, 0.74)), ("cyan", (0.10, 0.78, 0.84)))
MAX_NATURAL_CLASSES = len(SHAPES) * len(COLOURS)

# Medical splits in generation order: (site key, split, labelled?, has train-style labels?).
_SPLITS = (("a", "unlabelled"), ("a", "train"), ("a", "valid"), ("a", "test"),
           ("b", "train"), ("b", "test"), ("c", "train"), ("c", "test"))
_SITE_INDEX = {"a": 0, "b": 1, "c": 2}
_SPLIT_INDEX = {"unlabelled": 0, "train": 1, "valid": 2, "test": 3}
_OWNED_ENTRIES = ("site_a", "site_b", "site_c", "natural", BENCHMARK_FILE)
_TEXTURE_WAVES = 12  # plane waves in each patient's texture (SyntheticConfig.patient_texture)
_CHUNK = 128  # images rendered per vectorised batch (fixed: it is part of the RNG layout)


@dataclasses.dataclass(frozen=True)
class SiteShift:
  """Acquisition characteristics of one site, applied after the anatomy is drawn.

  Attributes:
    gamma: tone curve exponent on [0, 1] intensities (<1 brightens mid-tones).
    contrast: gain around 0.5 after the tone curve.
    offset: additive intensity offset after the contrast gain.
    invert: whether the stored image is inverted (bright air, dark bones).
    noise_std: std of additive white Gaussian noise, in [0, 1] intensity units.
    blur_sigma: Gaussian blur sigma in pixels of the output image (lower resolution).
    zoom: field-of-view magnification (>1: tighter field of view, anatomy looks larger).
    marker_prob: probability that an image carries burned-in marker/text-like blocks.
    bit_depth: 8 or 16 (PNG sample depth).
    prevalence: target prevalence of each finding in ``FINDINGS`` order (per patient).
  """
  gamma: float = 1.0
  contrast: float = 1.0
  offset: float = 0.0
  invert: bool = False
  noise_std: float = 0.015
  blur_sigma: float = 0.0
  zoom: float = 1.0
  marker_prob: float = 0.0
  bit_depth: int = 8
  prevalence: Tuple[float, float, float, float] = (0.25, 0.15, 0.20, 0.18)


def _site_a() -> SiteShift:
  return SiteShift()


def _site_b() -> SiteShift:
  # Portable/ICU-like: washed-out tone curve, noisy, soft, tight collimation, markers,
  # sicker population.
  return SiteShift(gamma=0.7, contrast=0.8, offset=0.06, invert=False, noise_std=0.045,
                   blur_sigma=0.9, zoom=1.15, marker_prob=0.6, bit_depth=8,
                   prevalence=(0.35, 0.08, 0.32, 0.30))


def _site_c() -> SiteShift:
  # Screening-like: inverted (MONOCHROME1-style) 16-bit storage, harder tone curve, wide
  # field of view, healthier population with more nodules.
  return SiteShift(gamma=1.3, contrast=1.1, offset=-0.03, invert=True, noise_std=0.025,
                   blur_sigma=0.5, zoom=0.88, marker_prob=0.3, bit_depth=16,
                   prevalence=(0.15, 0.20, 0.12, 0.10))


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Everything that determines the generated benchmark (sizes are in patients).

  Defaults are sized for the 15-minute CPU demo: site A ≈ 2100 unlabelled, 600 train,
  200 valid, 400 test images; sites B and C ≈ 600 train / 400 test images each; natural
  24 classes × (60 train, 20 test). Use :meth:`quick` for a tiny copy (tests).

  Attributes:
    seed: master seed; every split draws from its own stream derived from it.
    image_size: side of the square medical images, pixels.
    images_per_patient: inclusive (min, max) images per patient (one study each).
    lateral_fraction: probability that a patient's 2nd, 3rd, ... image is a lateral view
      (the first image is always frontal).
    site_a_unlabelled_patients .. site_c_test_patients: patients per split.
    subtle_fraction: fraction of positive findings drawn small/faint.
    effusion_cardiomegaly_rr: relative risk of effusion given cardiomegaly.
    opacity_effusion_rr: relative risk of opacity given effusion.
    uncertain_rate: probability that a (patient, finding) cell of a TRAIN split is
      written as -1.0 (uncertain), whatever its true value.
    blank_rate: probability that a NEGATIVE (patient, finding) cell of a TRAIN split is
      left blank (not mentioned); positives are never blank.
    site_a, site_b, site_c: acquisition shift and prevalence of each site.
    natural_classes: number of shape×colour classes (2..36).
    natural_train_per_class, natural_test_per_class: natural images per class.
    natural_image_size: side of natural images; None → ``image_size``.
    patient_texture: RMS intensity of each patient's own fine "lung-marking" texture (a sum
      of random plane waves fixed in anatomical coordinates, so every view of the patient
      shows the same pattern; 0 = none). It gives each patient an identity that survives
      crops, which contrastive pretraining needs (docs/stage2_study.md).
    later_view_jitter: scale of the rotation/scale/shift/exposure jitter of a patient's
      2nd, 3rd, ... image (1 = ±10°, ±10%, ±0.1, ±15%).
  """
  seed: int = 0
  image_size: int = 64
  images_per_patient: Tuple[int, int] = (2, 4)
  lateral_fraction: float = 0.3
  site_a_unlabelled_patients: int = 700
  site_a_train_patients: int = 200
  site_a_valid_patients: int = 67
  site_a_test_patients: int = 133
  site_b_train_patients: int = 200
  site_b_test_patients: int = 133
  site_c_train_patients: int = 200
  site_c_test_patients: int = 133
  subtle_fraction: float = 0.3
  effusion_cardiomegaly_rr: float = 2.5
  opacity_effusion_rr: float = 1.8
  uncertain_rate: float = 0.05
  blank_rate: float = 0.08
  site_a: SiteShift = dataclasses.field(default_factory=_site_a)
  site_b: SiteShift = dataclasses.field(default_factory=_site_b)
  site_c: SiteShift = dataclasses.field(default_factory=_site_c)
  natural_classes: int = 24
  natural_train_per_class: int = 60
  natural_test_per_class: int = 20
  natural_image_size: Optional[int] = None
  patient_texture: float = 0.0
  later_view_jitter: float = 1.0

  def __post_init__(self):
    if self.image_size < 32:
      raise ConfigError(f"SyntheticConfig.image_size must be >= 32, got {self.image_size}")
    lo, hi = self.images_per_patient
    if not 1 <= lo <= hi:
      raise ConfigError("SyntheticConfig.images_per_patient must be (min, max) with "
                        f"1 <= min <= max, got {self.images_per_patient}")
    for site, split in _SPLITS:
      n = getattr(self, f"site_{site}_{split}_patients")
      if n < 1:
        raise ConfigError(f"SyntheticConfig.site_{site}_{split}_patients must be >= 1, got {n}")
    for name in ("lateral_fraction", "subtle_fraction", "uncertain_rate", "blank_rate"):
      v = getattr(self, name)
      if not 0.0 <= v <= 1.0:
        raise ConfigError(f"SyntheticConfig.{name} must be in [0, 1], got {v}")
    if self.uncertain_rate + self.blank_rate >= 1.0:
      raise ConfigError("SyntheticConfig.uncertain_rate + blank_rate must be < 1")
    for name in ("effusion_cardiomegaly_rr", "opacity_effusion_rr"):
      if getattr(self, name) <= 0:
        raise ConfigError(f"SyntheticConfig.{name} must be > 0, got {getattr(self, name)}")
    for site in "abc":
      shift = getattr(self, f"site_{site}")
      if not isinstance(shift, SiteShift):
        raise ConfigError(f"SyntheticConfig.site_{site} must be a SiteShift")
      if len(shift.prevalence) != len(FINDINGS) or not all(
          0.0 <= p <= 1.0 for p in shift.prevalence):
        raise ConfigError(f"SyntheticConfig.site_{site}.prevalence must be {len(FINDINGS)} "
                          f"values in [0, 1], got {shift.prevalence}")
      if shift.bit_depth not in (8, 16):
        raise ConfigError(f"SyntheticConfig.site_{site}.bit_depth must be 8 or 16, "
                          f"got {shift.bit_depth}")
      if shift.gamma <= 0 or shift.zoom <= 0 or shift.noise_std < 0 or shift.blur_sigma < 0:
        raise ConfigError(f"SyntheticConfig.site_{site}: gamma and zoom must be > 0, "
                          "noise_std and blur_sigma >= 0")
    if not 2 <= self.natural_classes <= MAX_NATURAL_CLASSES:
      raise ConfigError(f"SyntheticConfig.natural_classes must be in [2, "
                        f"{MAX_NATURAL_CLASSES}], got {self.natural_classes}")
    if self.natural_train_per_class < 1 or self.natural_test_per_class < 1:
      raise ConfigError("SyntheticConfig.natural_{train,test}_per_class must be >= 1")
    if not 0.0 <= self.patient_texture <= 0.2:
      raise ConfigError(f"SyntheticConfig.patient_texture must be in [0, 0.2], got "
                        f"{self.patient_texture}")
    if not 0.0 <= self.later_view_jitter <= 2.0:
      raise ConfigError(f"SyntheticConfig.later_view_jitter must be in [0, 2], got "
                        f"{self.later_view_jitter}")
    if self.natural_image_size is not None and self.natural_image_size < 16:
      raise ConfigError("SyntheticConfig.natural_image_size must be >= 16 or None, got "
                        f"{self.natural_image_size}")

  @classmethod
  def quick(cls, seed: int = 0, **overrides: Any) -> "SyntheticConfig":
    """A tiny benchmark (≈ 500 images, a few seconds) for tests and smoke runs."""
    values = dict(seed=seed, site_a_unlabelled_patients=30, site_a_train_patients=24,
                  site_a_valid_patients=8, site_a_test_patients=14,
                  site_b_train_patients=16, site_b_test_patients=12,
                  site_c_train_patients=16, site_c_test_patients=12,
                  natural_train_per_class=4, natural_test_per_class=2)
    values.update(overrides)
    return cls(**values)

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> "SyntheticConfig":
    """Inverse of ``dataclasses.asdict`` (lists → tuples, nested SiteShift rebuilt)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ConfigError(f"SyntheticConfig: unknown field(s) {unknown}")
    kwargs = {}
    for k, v in values.items():
      if k in ("site_a", "site_b", "site_c") and isinstance(v, dict):
        v = SiteShift(**{sk: (tuple(sv) if isinstance(sv, list) else sv)
                         for sk, sv in v.items()})
      elif isinstance(v, list):
        v = tuple(v)
      kwargs[k] = v
    return cls(**kwargs)

  def site(self, key: str) -> SiteShift:
    """The SiteShift of site ``"a"``, ``"b"`` or ``"c"``."""
    return getattr(self, f"site_{key}")

  def natural_size(self) -> int:
    return self.natural_image_size or self.image_size

  def to_json_dict(self) -> Dict[str, Any]:
    """Plain JSON-compatible dict (tuples as lists), as stored in benchmark.json."""
    return json.loads(json.dumps(dataclasses.asdict(self)))


def natural_class_names(num_classes: int) -> Tuple[str, ...]:
  """Class names ``"<colour>_<shape>"``, colours outer, shapes inner (stable order)."""
  names = [f"{c}_{s}" for c, _ in COLOURS for s in SHAPES]
  return tuple(names[:num_classes])


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


def _sample_patients(rng: np.random.Generator, n: int, shift: SiteShift,
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


def _sample_views(rng: np.random.Generator, n_patients: int, cfg: SyntheticConfig,
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


def _blob(x, y, cx, cy, sigma):
  return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma ** 2))


def _layout(pat: Dict[str, np.ndarray], views: Dict[str, np.ndarray],
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


def _render_chest(L: Dict[str, np.ndarray], size: int, zoom: float) -> np.ndarray:
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
    img += body * e(L["lump_amp"][:, j]) * _blob(x, y, e(L["lump_x"][:, j]),
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
    img += e(L["opa_amp"][:, j]) * mask * _blob(x, y, e(L["opa_x"][:, j]), e(L["opa_y"][:, j]),
                                                e(L["opa_s"][:, j]))
  lung_any = np.clip(lung_raw[0] + lung_raw[1], 0.0, 1.0)
  img += e(L["nod_amp"]) * (0.3 + 0.7 * lung_any) * _blob(x, y, e(L["nod_x"]), e(L["nod_y"]),
                                                          e(L["nod_s"]))
  img += e(L["nip_amp"]) * _blob(x, y, e(L["nip_x"]), e(L["nip_y"]), 0.03)
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


def _apply_site(images: np.ndarray, shift: SiteShift, rng: np.random.Generator) -> np.ndarray:
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


def _quantise(img: np.ndarray, bit_depth: int) -> np.ndarray:
  scale = 65535.0 if bit_depth == 16 else 255.0
  dtype = np.uint16 if bit_depth == 16 else np.uint8
  return np.round(np.clip(img, 0.0, 1.0) * scale).astype(dtype)


def _png_bytes(arr: np.ndarray) -> bytes:
  """uint8 gray/RGB or uint16 gray array → PNG bytes (deterministic encoder settings)."""
  im = Image.fromarray(arr)
  buf = io.BytesIO()
  im.save(buf, format="PNG", compress_level=6)
  return buf.getvalue()


def _render_split_images(pat, views, shift: SiteShift, size: int,
                         rng: np.random.Generator):
  """Yields (start, quantised images) chunks for all images of a split."""
  m = len(views["patient"])
  for start in range(0, m, _CHUNK):
    idx = np.arange(start, min(m, start + _CHUNK))
    raw = _render_chest(_layout(pat, views, idx), size, shift.zoom)
    yield start, _apply_site(raw, shift, rng)


# ---------------------------------------------------------------------------------------
# Natural images (RGB shapes × colours on textured backgrounds).
# ---------------------------------------------------------------------------------------


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


def _render_natural(class_ids: np.ndarray, num_classes: int, size: int,
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
      tex = sum(rng.uniform(-1, 1) * _blob(gx, gy, *rng.uniform(-1, 1, 2), rng.uniform(0.2, 0.5))
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


# ---------------------------------------------------------------------------------------
# Writing the benchmark.
# ---------------------------------------------------------------------------------------


def _csv_text(header: Sequence[str], rows: List[Sequence[str]]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(header)
  w.writerows(rows)
  return buf.getvalue()


def _label_text(v: float) -> str:
  return "" if np.isnan(v) else f"{v:.1f}"


def _observed_labels(labels: np.ndarray, rng: np.random.Generator,
                     cfg: SyntheticConfig) -> np.ndarray:
  """float ``[n, 4]``: 1/0 labels with CheXpert-style -1 (uncertain) and NaN (blank).

  Any cell is uncertain with probability ``uncertain_rate``; a negative cell is blank
  ("not mentioned") with probability ``blank_rate``. Positives are never blanked, so
  reading blanks as negatives (CheXpert's convention) adds no label noise.
  """
  obs = labels.astype(np.float64)
  u = rng.random(labels.shape)
  obs[u < cfg.uncertain_rate] = -1.0
  blank = (u >= cfg.uncertain_rate) & (u < cfg.uncertain_rate + cfg.blank_rate) & ~labels
  obs[blank] = np.nan
  return obs


def _seeds(cfg: SyntheticConfig, *key: int) -> Tuple[np.random.Generator, ...]:
  ss = np.random.SeedSequence(entropy=cfg.seed, spawn_key=key)
  return tuple(np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(3))


def _sample_demographics(cfg: SyntheticConfig, site: str, split: str,
                         labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Per-patient ``Sex`` ("F"/"M", 1:1) and ``Age`` (years, int in [18, 95]; about 10 years
  older on average with cardiomegaly), from a seed stream of their own."""
  ss = np.random.SeedSequence(entropy=cfg.seed,
                              spawn_key=(_SITE_INDEX[site], _SPLIT_INDEX[split], 100))
  rng = np.random.Generator(np.random.PCG64(ss))
  n = labels.shape[0]
  sex = np.where(rng.random(n) < 0.5, "F", "M")
  card = labels[:, FINDINGS.index("Cardiomegaly")]
  age = np.clip(np.round(rng.normal(55.0 + 10.0 * card, 15.0)), 18, 95).astype(int)
  return sex, age


def _write_file(path: str, data: bytes) -> None:
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(data)


def _generate_medical_split(out_dir: str, site: str, split: str, first_patient: int,
                            id_width: int, cfg: SyntheticConfig) -> Dict[str, Any]:
  """Draws, renders and writes one split; returns its CSV path and measured summary."""
  shift = cfg.site(site)
  n = getattr(cfg, f"site_{site}_{split}_patients")
  meta_rng, pixel_rng, label_rng = _seeds(cfg, _SITE_INDEX[site], _SPLIT_INDEX[split])
  pat = _sample_patients(meta_rng, n, shift, cfg)
  views = _sample_views(meta_rng, n, cfg)
  labelled = split != "unlabelled"
  obs = (_observed_labels(pat["labels"], label_rng, cfg) if split == "train"
         else pat["labels"].astype(np.float64))
  rel_split = f"site_{site}/{split}"
  rel_paths = []
  for pi, vi, lat in zip(views["patient"], views["view_index"], views["lateral"]):
    pid = f"patient{first_patient + pi:0{id_width}d}"
    rel_paths.append(f"{rel_split}/{pid}/study1/view{vi + 1}_"
                     f"{'lateral' if lat else 'frontal'}.png")
  for d in sorted({os.path.dirname(r) for r in rel_paths}):
    tf.io.gfile.makedirs(os.path.join(out_dir, d))
  sums = np.zeros(2)
  count = 0
  for start, chunk in _render_split_images(pat, views, shift, cfg.image_size, pixel_rng):
    sums += [chunk.sum(dtype=np.float64), np.square(chunk, dtype=np.float64).sum()]
    count += chunk.size
    q = _quantise(chunk, shift.bit_depth)
    for j in range(len(q)):
      _write_file(os.path.join(out_dir, rel_paths[start + j]), _png_bytes(q[j]))
  sex, age = _sample_demographics(cfg, site, split, pat["labels"])
  rows = []
  for p, rel in enumerate(rel_paths):
    pi = views["patient"][p]
    row = [rel, f"patient{first_patient + pi:0{id_width}d}", site.upper(),
           "Lateral" if views["lateral"][p] else "Frontal"]
    if labelled:
      row += [_label_text(v) for v in obs[pi]]
    rows.append(row + [sex[pi], str(age[pi])])
  csv_rel = f"site_{site}/{split}.csv"
  io_utils.atomic_write_text(os.path.join(out_dir, csv_rel),
                             _csv_text(MEDICAL_COLUMNS if labelled else UNLABELLED_COLUMNS,
                                       rows))
  img_labels = pat["labels"][views["patient"]]
  img_obs = obs[views["patient"]]
  mean = sums[0] / count
  summary = {
      "csv": csv_rel, "patients": int(n), "images": len(rel_paths),
      "frontal": int((~views["lateral"]).sum()), "lateral": int(views["lateral"].sum()),
      "patients_with_multiple_images": int((np.bincount(views["patient"]) > 1).sum()),
      "pixel_mean": round(float(mean), 4),
      "pixel_std": round(float(np.sqrt(max(0.0, sums[1] / count - mean ** 2))), 4),
      "bit_depth": shift.bit_depth,
      "patients_by_sex": {k: int((sex == k).sum()) for k in ("F", "M")},
      "age_mean": round(float(age.mean()), 2),
  }
  if labelled:
    known = (img_obs == 0.0) | (img_obs == 1.0)
    summary["prevalence_true"] = {f: round(float(img_labels[:, k].mean()), 4)
                                  for k, f in enumerate(FINDINGS)}
    summary["prevalence_labelled"] = {
        f: round(float((img_obs[:, k] == 1.0).sum() / max(1, known[:, k].sum())), 4)
        for k, f in enumerate(FINDINGS)}
    summary["uncertain_fraction"] = round(float((img_obs == -1.0).mean()), 4)
    summary["blank_fraction"] = round(float(np.isnan(img_obs).mean()), 4)
  return summary


def _generate_natural_split(out_dir: str, split: str, cfg: SyntheticConfig) -> Dict[str, Any]:
  per_class = cfg.natural_train_per_class if split == "train" else cfg.natural_test_per_class
  names = natural_class_names(cfg.natural_classes)
  rng, _, _ = _seeds(cfg, 9, _SPLIT_INDEX[split])
  class_ids = np.tile(np.arange(cfg.natural_classes), per_class)
  rows = []
  for name in names:
    tf.io.gfile.makedirs(os.path.join(out_dir, "natural", split, name))
  size = cfg.natural_size()
  for start in range(0, len(class_ids), _CHUNK):
    ids = class_ids[start:start + _CHUNK]
    imgs = _render_natural(ids, cfg.natural_classes, size, rng)
    for j, cid in enumerate(ids):
      rel = f"natural/{split}/{names[cid]}/img{start + j:05d}.png"
      _write_file(os.path.join(out_dir, rel), _png_bytes(imgs[j]))
      rows.append([rel, names[cid]])
  csv_rel = f"natural/{split}.csv"
  io_utils.atomic_write_text(os.path.join(out_dir, csv_rel), _csv_text(NATURAL_COLUMNS, rows))
  return {"csv": csv_rel, "images": len(rows), "classes": len(names)}


def _result(out_dir: str, summary: Dict[str, Any]) -> Dict[str, Any]:
  csvs = {key: os.path.join(out_dir, s["csv"]) for key, s in summary["splits"].items()}
  return {"out_dir": out_dir, "benchmark_json": os.path.join(out_dir, BENCHMARK_FILE),
          "csv": csvs, "summary": summary}


def _existing_summary(out_dir: str, cfg: SyntheticConfig) -> Optional[Dict[str, Any]]:
  """The stored summary if ``out_dir`` holds a complete benchmark for ``cfg``, else None."""
  path = os.path.join(out_dir, BENCHMARK_FILE)
  if not tf.io.gfile.exists(path):
    return None
  try:
    summary = io_utils.read_json(path)
  except (ValueError, tf.errors.OpError):
    return None
  if not isinstance(summary, dict) or "splits" not in summary or configs.config_differences(
      {k: summary.get(k) for k in ("generator_version", "config")},
      configs.jsonable({"generator_version": GENERATOR_VERSION, "config": cfg.to_json_dict()})):
    return None
  for s in summary["splits"].values():
    if not tf.io.gfile.exists(os.path.join(out_dir, s["csv"])):
      return None
  return summary


def generate_benchmark(out_dir: str, config: Optional[SyntheticConfig] = None,
                       num_workers: int = 2) -> Dict[str, Any]:
  """Writes the synthetic benchmark under ``out_dir`` (local or gs://) and describes it.

  Idempotent: when ``out_dir/benchmark.json`` already records this exact config (and
  generator version) nothing is redrawn and the same dict is returned. Otherwise the
  generator-owned entries (``site_a``, ``site_b``, ``site_c``, ``natural``,
  ``benchmark.json``) are deleted first so old and new files never mix; other files in
  ``out_dir`` are left alone. ``benchmark.json`` is written last, so an interrupted run
  is redone from scratch next time. ``num_workers`` threads draw splits concurrently (the
  output does not depend on it).

  Returns:
    ``{"out_dir", "benchmark_json", "csv": {"site_a/train": path, ...}, "summary"}`` where
    ``summary`` is the content of benchmark.json (config, sizes, measured prevalences,
    site shift parameters, natural class names).
  """
  cfg = config or SyntheticConfig()
  if not isinstance(cfg, SyntheticConfig):
    raise ConfigError(f"generate_benchmark: config must be a SyntheticConfig, got "
                      f"{type(cfg).__name__}")
  existing = _existing_summary(out_dir, cfg)
  if existing is not None:
    logging.info("synthetic benchmark in %s is up to date; not regenerating", out_dir)
    return _result(out_dir, existing)
  if tf.io.gfile.exists(out_dir) and not tf.io.gfile.isdir(out_dir):
    raise DataError(f"synthetic benchmark out_dir {out_dir} exists and is not a directory")
  for name in _OWNED_ENTRIES:
    path = os.path.join(out_dir, name)
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  io_utils.ensure_dir(out_dir)
  t0 = time.time()
  counts = [getattr(cfg, f"site_{s}_{sp}_patients") for s, sp in _SPLITS]
  id_width = max(5, len(str(sum(counts))))
  firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
  # Every split draws from its own seed streams, so running them concurrently changes
  # nothing in the output; numpy, zlib and file writes release the GIL, so threads help.
  with concurrent.futures.ThreadPoolExecutor(max(1, min(4, num_workers))) as pool:
    jobs = {f"site_{site}/{split}": pool.submit(_generate_medical_split, out_dir, site, split,
                                                first, id_width, cfg)
            for (site, split), first in zip(_SPLITS, firsts)}
    jobs.update({f"natural/{split}": pool.submit(_generate_natural_split, out_dir, split, cfg)
                 for split in ("train", "test")})
    splits = {key: job.result() for key, job in jobs.items()}
  summary = {
      "generator_version": GENERATOR_VERSION,
      "seed": cfg.seed,
      "config": cfg.to_json_dict(),
      "findings": list(FINDINGS),
      "medical_columns": list(MEDICAL_COLUMNS),
      "unlabelled_columns": list(UNLABELLED_COLUMNS),
      "natural_columns": list(NATURAL_COLUMNS),
      "natural_classes": list(natural_class_names(cfg.natural_classes)),
      "sites": {s.upper(): dataclasses.asdict(cfg.site(s)) for s in "abc"},
      "label_values": {"positive": "1.0", "negative": "0.0", "uncertain": "-1.0",
                       "not_mentioned": "", "uncertain_and_blank_in": "train splits only"},
      "splits": splits,
  }
  summary = json.loads(json.dumps(summary))
  io_utils.atomic_write_json(os.path.join(out_dir, BENCHMARK_FILE), summary)
  logging.info("synthetic benchmark written to %s in %.1f s", out_dir, time.time() - t0)
  return _result(out_dir, summary)


# ---------------------------------------------------------------------------------------
# Example grid for the docs.
# ---------------------------------------------------------------------------------------


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
  meta_rng, pixel_rng, _ = _seeds(cfg, 100 + seed)
  pat = _sample_patients(meta_rng, 1, shift, cfg, force_labels=np.asarray(labels, bool))
  views = _sample_views(meta_rng, 1, cfg, fixed_first=True)
  idx = np.array([1 if lateral else 0])
  raw = _render_chest(_layout(pat, views, idx), image_size, shift.zoom)
  return _apply_site(raw, shift, pixel_rng)[0]


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
      tile_img = Image.fromarray(_quantise(img, 8)).resize((tile, tile), Image.NEAREST)
      canvas.paste(tile_img.convert("RGB"), (label_w + c * (tile + pad), y0))
  y0 = head_h + 3 * (tile + pad)
  draw.text((2, y0 + tile // 2 - 6), "natural", fill=(0, 0, 0))
  rng = np.random.Generator(np.random.PCG64(seed))
  n_nat = min(len(cols), cfg.natural_classes)
  ids = np.linspace(0, cfg.natural_classes - 1, n_nat).astype(int)
  nat = _render_natural(ids, cfg.natural_classes, cfg.natural_size(), rng)
  names = natural_class_names(cfg.natural_classes)
  for c in range(n_nat):
    x0 = label_w + c * (tile + pad)
    canvas.paste(Image.fromarray(nat[c]).resize((tile, tile), Image.NEAREST), (x0, y0))
    draw.text((x0 + 2, y0 + 2), names[ids[c]], fill=(255, 255, 255))
  buf = io.BytesIO()
  canvas.save(buf, format="PNG", optimize=True)
  io_utils.atomic_write_bytes(out_png, buf.getvalue())
  return out_png
