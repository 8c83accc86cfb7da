"""What determines the synthetic benchmark: ``SyntheticConfig`` and the per-site
``SiteShift`` (validated), the column and class constants, and the seed streams.

Every split draws from its own ``seed_streams(cfg, *key)`` stream, so splits are
independent of each other and of the order (or thread) they are drawn in.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Optional, Tuple

import numpy as np

from remedis_tf.errors import ConfigError

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

# Medical splits in generation order: (site key, split).
SPLITS = (("a", "unlabelled"), ("a", "train"), ("a", "valid"), ("a", "test"),
          ("b", "train"), ("b", "test"), ("c", "train"), ("c", "test"))
# Seed-stream keys of sites and splits (never renumber: they define every split's draws).
SITE_INDEX = {"a": 0, "b": 1, "c": 2}
SPLIT_INDEX = {"unlabelled": 0, "train": 1, "valid": 2, "test": 3}
CHUNK = 128  # images rendered per vectorised batch (fixed: it is part of the RNG layout)


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
    for site, split in SPLITS:
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


def seed_streams(cfg: SyntheticConfig, *key: int) -> Tuple[np.random.Generator, ...]:
  """The three generators (metadata, pixels, labels) of the stream ``key`` under cfg.seed."""
  ss = np.random.SeedSequence(entropy=cfg.seed, spawn_key=key)
  return tuple(np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(3))
