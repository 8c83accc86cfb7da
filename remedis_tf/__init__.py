"""remedis_tf: REMEDIS (BiT → SimCLR/MICLe → fine-tuning) in Keras 3 / TensorFlow.

The names a user needs, as ``import remedis_tf as rt``::

  rt.ResNetV2, rt.load_backbone, rt.load_bit_npz        # build / load a backbone
  rt.from_preset, rt.save_to_preset                     # KerasHub preset folders
  rt.chexpert, rt.mimic_cxr, rt.generic_csv, rt.folder_manifest, rt.tfrecords_manifest
  rt.contrastive_dataset, rt.supervised_dataset, rt.eval_dataset  # tf.data pipelines
  rt.AugmentConfig, rt.get_preset, rt.ContrastiveConfig, rt.SupervisedConfig,
  rt.OptimizerConfig, rt.LoopConfig, rt.RuntimeConfig   # configs
  rt.run_supervised (stage 1 with stage="upstream", stage 3), rt.run_contrastive (stage 2)
  rt.plan_finetune, rt.evaluate_model, rt.run_data_efficiency
  rt.export_savedmodel, rt.export_classifier_savedmodel

Everything else stays in its module (see docs/architecture.md). Importing the package
registers our KerasHub classes (``remedis_tf>BiTBackbone``, ``remedis_tf>RemedisImageClassifier``,
see ``remedis_tf.weights.keras_hub_models``), so ``keras_hub.models.Backbone.from_preset`` and
``keras_hub.models.ImageClassifier.from_preset`` load our presets afterwards.
"""

from remedis_tf.data.augment import AugmentConfig, get_preset
from remedis_tf.data.folders import folder_manifest
from remedis_tf.data.manifest import Manifest
from remedis_tf.data.pipeline import contrastive_dataset, eval_dataset, supervised_dataset
from remedis_tf.data.recipes import chexpert, generic_csv, mimic_cxr
from remedis_tf.data.tfrecords import tfrecords_manifest
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs.classifier import export_classifier_savedmodel
from remedis_tf.runs.evaluate import evaluate_model
from remedis_tf.runs.stages import RuntimeConfig, run_contrastive, run_supervised
from remedis_tf.runs.sweep import run_data_efficiency
from remedis_tf.train.contrastive import ContrastiveConfig
from remedis_tf.train.finetune_plan import plan_finetune
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig
from remedis_tf.weights.bit_npz import load_bit_npz
from remedis_tf.weights.preset import from_preset, save_to_preset
from remedis_tf.weights.savedmodel import export_savedmodel, load_backbone

__all__ = [
    "ResNetV2", "load_backbone", "load_bit_npz", "from_preset", "save_to_preset",
    "Manifest", "chexpert", "mimic_cxr", "generic_csv", "folder_manifest",
    "tfrecords_manifest",
    "contrastive_dataset", "supervised_dataset", "eval_dataset",
    "AugmentConfig", "get_preset", "ContrastiveConfig", "SupervisedConfig",
    "OptimizerConfig", "LoopConfig", "RuntimeConfig",
    "run_supervised", "run_contrastive", "plan_finetune", "evaluate_model",
    "run_data_efficiency", "export_savedmodel", "export_classifier_savedmodel",
]
