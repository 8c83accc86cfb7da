"""What an augmented view may do: ``AugmentConfig`` (every knob, validated), the presets,
and the sub-seed id of each random operation.

Pure Python (no TensorFlow): flags, configs and run directories read it without building
graphs. To add an augmentation, its knobs go on ``AugmentConfig`` (with an ``Attributes:``
line, which becomes the flag help, and a check in ``_validate``) and, when it draws
randomness, its id joins ``OP_*`` below; the op itself lives in ``ops`` (pixel values) or
``geometry`` (where pixels go), and ``views`` gives it its place in a view.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

from remedis_tf.errors import ConfigError

RESIZE_METHODS = ("bicubic", "bilinear", "area", "lanczos3", "nearest")
FILL_MODES = ("constant", "reflect", "nearest", "wrap")
# Centre-crop fraction of evaluation images (Inception/BiT convention); a run's own value
# is AugmentConfig.eval_crop_fraction, recorded in its config.json.
EVAL_CROP_FRACTION = 0.875

# Sub-seed ids: a view's operation ``op`` draws from ``fold_in(seed, OP_...)``, so switching
# one operation on or off leaves the others' draws alone. Never renumber (that would change
# every stored run's augmentations); a new operation takes the next free id. Operations
# that need a second stream use ``id + 100``.
OP_HIST_EQ, OP_ELASTIC, OP_ROTATE, OP_CROP = 1, 2, 3, 4
OP_FLIP_LR, OP_FLIP_UD, OP_ROT90, OP_COLOR = 5, 6, 7, 8
OP_GRAY, OP_BLUR = 9, 10


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Every augmentation knob. Defaults = SimCLR-v2 / REMEDIS generic (docs/numerics.md).

  Attributes:
    image_size: output side S in pixels (views are ``[S, S, 3]``).
    crop_area_min, crop_area_max: range of the crop's area as a fraction of the image.
    crop_aspect_min, crop_aspect_max: range of the crop's width/height ratio.
    crop_min_object_covered: minimum fraction of the image the crop must cover.
    resize_method: interpolation used to resize crops to S (one of RESIZE_METHODS).
    antialias: low-pass filter when downscaling (slower; SimCLR does not).
    flip_lr_prob, flip_ud_prob: probabilities of a horizontal / vertical flip.
    rot90: rotate by a uniformly random multiple of 90° (after the crop).
    color_strength: SimCLR colour strength s (brightness/contrast/saturation 0.8·s,
      hue 0.2·s).
    color_prob: probability of applying the colour jitter.
    grayscale_prob: probability of converting to grayscale (channels made equal).
    blur_prob: probability of the Gaussian blur.
    blur_sigma_min, blur_sigma_max: blur σ range in output pixels.
    blur_kernel_fraction: blur kernel side as a fraction of S (SimCLR: 1/10).
    rotation_degrees: rotate by an angle ~ U(−r, r) degrees (0 = off).
    rotation_fill_mode: how pixels rotated in from outside are filled (FILL_MODES;
      "constant" fills with black).
    hist_eq_prob: probability of per-channel histogram equalisation.
    elastic_prob: probability of the elastic deformation.
    elastic_alpha: displacement scale α (Simard et al. 2003 convention: the smoothed
      U(−1, 1) field is multiplied by α), in pixels at resolution S.
    elastic_sigma: Gaussian smoothing σ of the displacement field, pixels at resolution S.
      Elastic deformation runs before the crop, on the decoded image, so σ is rescaled by
      k = (shorter input side / S) and α by k² (``elastic_params_for_source``): the warp in
      the view is the same at any source size. RMS displacement ≈ α / (σ·√(12π)) pixels
      per axis (view pixels, full-image crop; smaller crops magnify it).
    eval_crop_fraction: evaluation centre-crop side as a fraction of the shorter side.
  """
  image_size: int = 224
  crop_area_min: float = 0.08
  crop_area_max: float = 1.0
  crop_aspect_min: float = 3.0 / 4.0
  crop_aspect_max: float = 4.0 / 3.0
  crop_min_object_covered: float = 0.1
  resize_method: str = "bicubic"
  antialias: bool = False
  flip_lr_prob: float = 0.5
  flip_ud_prob: float = 0.0
  rot90: bool = False
  color_strength: float = 1.0
  color_prob: float = 0.8
  grayscale_prob: float = 0.2
  blur_prob: float = 0.5
  blur_sigma_min: float = 0.1
  blur_sigma_max: float = 2.0
  blur_kernel_fraction: float = 0.1
  rotation_degrees: float = 0.0
  rotation_fill_mode: str = "constant"
  hist_eq_prob: float = 0.0
  elastic_prob: float = 0.0
  elastic_alpha: float = 0.0
  elastic_sigma: float = 16.0
  eval_crop_fraction: float = EVAL_CROP_FRACTION

  def __post_init__(self):
    _validate(self)


def _fail(field: str, value, why: str, related=()):
  raise ConfigError(why, field=field, value=value, config="AugmentConfig", related=related)


def _validate(cfg: AugmentConfig) -> None:
  """Raises ConfigError naming the first invalid field."""
  if not isinstance(cfg.image_size, int) or isinstance(cfg.image_size, bool) or (
      cfg.image_size < 8):
    _fail("image_size", cfg.image_size, "must be an integer >= 8")
  for name in ("flip_lr_prob", "flip_ud_prob", "color_prob", "grayscale_prob", "blur_prob",
               "hist_eq_prob", "elastic_prob", "crop_min_object_covered"):
    value = getattr(cfg, name)
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
      _fail(name, value, "must be in [0, 1]")
  if not 0.0 < cfg.crop_area_min <= cfg.crop_area_max <= 1.0:
    _fail("crop_area_min", cfg.crop_area_min,
          f"need 0 < {{crop_area_min}} <= {{crop_area_max}} ({cfg.crop_area_max}) <= 1",
          related=("crop_area_max",))
  if not 0.0 < cfg.crop_aspect_min <= cfg.crop_aspect_max:
    _fail("crop_aspect_min", cfg.crop_aspect_min,
          f"need 0 < {{crop_aspect_min}} <= {{crop_aspect_max}} ({cfg.crop_aspect_max})",
          related=("crop_aspect_max",))
  if cfg.resize_method not in RESIZE_METHODS:
    _fail("resize_method", cfg.resize_method, f"must be one of {RESIZE_METHODS}")
  if cfg.rotation_fill_mode not in FILL_MODES:
    _fail("rotation_fill_mode", cfg.rotation_fill_mode, f"must be one of {FILL_MODES}")
  if not 0.0 <= cfg.color_strength <= 2.5:
    _fail("color_strength", cfg.color_strength, "must be in [0, 2.5] (hue shift 0.2·s <= 0.5)")
  if not 0.0 < cfg.blur_sigma_min <= cfg.blur_sigma_max:
    _fail("blur_sigma_min", cfg.blur_sigma_min,
          f"need 0 < {{blur_sigma_min}} <= {{blur_sigma_max}} ({cfg.blur_sigma_max})",
          related=("blur_sigma_max",))
  if not 0.0 < cfg.blur_kernel_fraction <= 0.5:
    _fail("blur_kernel_fraction", cfg.blur_kernel_fraction, "must be in (0, 0.5]")
  if not 0.0 <= cfg.rotation_degrees <= 180.0:
    _fail("rotation_degrees", cfg.rotation_degrees, "must be in [0, 180]")
  if cfg.elastic_alpha < 0.0:
    _fail("elastic_alpha", cfg.elastic_alpha, "must be >= 0")
  if cfg.elastic_sigma <= 0.0:
    _fail("elastic_sigma", cfg.elastic_sigma, "must be > 0")
  if not 0.0 < cfg.eval_crop_fraction <= 1.0:
    _fail("eval_crop_fraction", cfg.eval_crop_fraction, "must be in (0, 1]")
  for name in ("rot90", "antialias"):
    if not isinstance(getattr(cfg, name), bool):
      _fail(name, getattr(cfg, name), "must be true or false")


# Presets: see docs/augmentations.md for the reasoning and the assumptions behind each.
PRESETS: Dict[str, AugmentConfig] = {
    # SimCLR-v2 / REMEDIS code defaults.
    "generic": AugmentConfig(),
    # Chest X-ray: grayscale modality; blur hides subtle findings; the medical extras on.
    "cxr": AugmentConfig(color_strength=0.5, blur_prob=0.0, rotation_degrees=45.0,
                         hist_eq_prob=0.5, elastic_prob=0.5, elastic_alpha=400.0,
                         elastic_sigma=20.0),
    # Dermatology photos: colour matters diagnostically, so weaker colour jitter; no
    # canonical orientation, hence both flips and rotations.
    "derm": AugmentConfig(color_strength=0.5, flip_ud_prob=0.5, rotation_degrees=30.0,
                          rotation_fill_mode="reflect"),
    # Fundus: keep the whole disc (milder crops), weak colour, small rotations; left/right
    # flips map one eye to the other, which is acceptable for DME.
    "fundus": AugmentConfig(crop_area_min=0.25, color_strength=0.5, rotation_degrees=15.0),
    # Pathology patches: no canonical orientation at all (D4 symmetry); stain variation is
    # what colour jitter emulates, so keep s = 1.
    "pathology": AugmentConfig(flip_ud_prob=0.5, rot90=True),
    # Mammography: grayscale, high resolution, tiny findings: milder crops, no blur, weak
    # intensity jitter, small rotations, histogram equalisation for vendor differences.
    "mammo": AugmentConfig(crop_area_min=0.25, color_strength=0.5, blur_prob=0.0,
                           flip_ud_prob=0.5, rotation_degrees=15.0, hist_eq_prob=0.5),
}


def get_preset(name: str, **overrides) -> AugmentConfig:
  """Preset ``name`` with fields replaced by ``overrides`` (validated).

  Raises ConfigError for an unknown preset (listing PRESETS) or an unknown field (listing
  the valid ones).
  """
  if name not in PRESETS:
    raise ConfigError(f"unknown augmentation preset {name!r}; valid: {sorted(PRESETS)}")
  fields = [f.name for f in dataclasses.fields(AugmentConfig)]
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"unknown AugmentConfig field(s) {unknown}; valid: {fields}")
  return dataclasses.replace(PRESETS[name], **overrides)
