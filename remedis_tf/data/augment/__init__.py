"""Image augmentations for contrastive pretraining and fine-tuning, and their presets.

``config`` (what a view may do: ``AugmentConfig``, presets, sub-seed ids), ``ops`` (pixel
values: colour, grayscale, blur, histogram equalisation), ``geometry`` (crop, flips,
elastic field, the fused ``warped_crop``), ``views`` (the compositions the pipelines use,
and MixUp). The names below are the package's public API, used as
``from remedis_tf.data import augment as augment_lib; augment_lib.augment_view(...)``.
"""

from remedis_tf.data.augment.config import (EVAL_CROP_FRACTION, FILL_MODES, PRESETS,
                                            RESIZE_METHODS, AugmentConfig, get_preset)
from remedis_tf.data.augment.geometry import (bilinear_sample, elastic_params_for_source,
                                              random_flips, random_resized_crop, warped_crop)
from remedis_tf.data.augment.ops import (adjust_saturation, color_jitter, equalize_histogram,
                                         gaussian_blur, random_blur, to_grayscale)
from remedis_tf.data.augment.views import (augment_view, eval_preprocess, eval_transform,
                                           finetune_augment, mixup_batch, sample_mixup_lambda)

__all__ = [
    "AugmentConfig", "PRESETS", "get_preset", "RESIZE_METHODS", "FILL_MODES",
    "EVAL_CROP_FRACTION",
    "augment_view", "finetune_augment", "eval_preprocess", "eval_transform", "mixup_batch",
    "sample_mixup_lambda",
    "random_resized_crop", "random_flips", "bilinear_sample", "elastic_params_for_source",
    "warped_crop",
    "color_jitter", "adjust_saturation", "to_grayscale", "gaussian_blur", "random_blur",
    "equalize_histogram",
]
