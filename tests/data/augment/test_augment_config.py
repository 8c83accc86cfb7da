"""AugmentConfig validation, presets and get_preset (remedis_tf.data.augment.config)."""

import pytest

from remedis_tf.data import augment as A
from remedis_tf.errors import ConfigError


def test_presets_say_what_they_do():
  cxr = A.PRESETS["cxr"]
  assert cxr.blur_prob == 0.0 and cxr.color_strength == 0.5
  assert cxr.rotation_degrees == 45.0 and cxr.hist_eq_prob == 0.5
  assert cxr.elastic_prob > 0 and cxr.elastic_alpha > 0
  g = A.PRESETS["generic"]
  assert (g.crop_area_min, g.crop_area_max, g.color_strength, g.color_prob,
          g.grayscale_prob, g.blur_prob, g.rotation_degrees) == (0.08, 1.0, 1.0, 0.8, 0.2,
                                                                 0.5, 0.0)
  path = A.PRESETS["pathology"]
  assert path.flip_ud_prob > 0 and path.rot90


def test_get_preset_errors_list_valid_names():
  with pytest.raises(ConfigError, match="generic"):
    A.get_preset("xray")
  with pytest.raises(ConfigError, match="blur_prob"):
    A.get_preset("generic", blurr_prob=0.1)
  assert A.get_preset("derm", image_size=64).image_size == 64


@pytest.mark.parametrize("field,value", [
    ("image_size", 0), ("crop_area_min", 0.0), ("crop_area_min", 1.5), ("flip_lr_prob", 1.2),
    ("blur_sigma_min", -1.0), ("resize_method", "cubic"), ("rotation_degrees", 400.0),
    ("elastic_sigma", 0.0), ("eval_crop_fraction", 0.0), ("color_strength", -1.0),
    ("rotation_fill_mode", "mirror"), ("rot90", 1)])
def test_invalid_fields_name_the_field(field, value):
  with pytest.raises(ConfigError, match=field):
    A.AugmentConfig(**{field: value})
