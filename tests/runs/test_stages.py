"""The stages use the run's own evaluation crop: model selection, evaluate_task and
load_model follow ``AugmentConfig.eval_crop_fraction`` recorded in config.json."""

import dataclasses
import os

import numpy as np
import pytest

from remedis_tf import configs, io_utils
from remedis_tf.data import augment as augment_lib
from remedis_tf.eval import predict as predict_lib
from remedis_tf.eval import task_metrics
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import classifier, stages
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig
from tests.eval.tiny_data import brightness_set

SIZE = 32


def test_runtime_config_declares_its_resumable_fields():
  assert configs.resumable_fields(stages.RuntimeConfig()) == ("strategy", "num_cpu_devices",
                                                              "tpu")
  assert "RESUMABLE_FIELDS" not in configs.to_dict(stages.RuntimeConfig())


def test_a_non_default_eval_crop_reaches_selection_evaluation_and_loading(tmp_path,
                                                                          monkeypatch):
  root = str(tmp_path)
  train, _ = brightness_set(root, "train", 6, seed=0)
  valid, _ = brightness_set(root, "valid", 6, seed=1)
  augment = dataclasses.replace(augment_lib.get_preset("generic", image_size=SIZE),
                                eval_crop_fraction=1.0)
  assert augment_lib.EVAL_CROP_FRACTION != 1.0
  crops = []
  real_predict = predict_lib.predict

  def spy(*args, **kwargs):
    crops.append(kwargs.get("crop_fraction"))
    return real_predict(*args, **kwargs)

  monkeypatch.setattr(predict_lib, "predict", spy)
  run_dir = os.path.join(root, "run")
  opt = OptimizerConfig(name="sgd", base_lr=0.05, lr_scaling="none", schedule="constant",
                        total_steps=4, weight_decay=0.0)
  stages.run_supervised(train, SupervisedConfig(variant="tiny", global_batch_size=6), opt,
                        augment, SIZE, LoopConfig(run_dir, 4, steps_per_loop=2, eval_every=2),
                        validation=valid, log=lambda _: None)
  # Model selection predicted the validation set with the run's crop, every time.
  assert crops and all(c == 1.0 for c in crops)
  monkeypatch.undo()

  run_config = configs.read_run_config(run_dir)
  assert run_config["augment"]["eval_crop_fraction"] == 1.0
  assert stages.eval_crop_fraction(run_config) == 1.0
  assert stages.eval_crop_fraction({"augment": None}) == augment_lib.EVAL_CROP_FRACTION

  task, _ = stages.load_classifier(run_dir)
  full = predict_lib.predict(task.inference_fn(), valid, SIZE, crop_fraction=1.0,
                             keep=("scores", "logits"))
  cropped = predict_lib.predict(task.inference_fn(), valid, SIZE,
                                crop_fraction=augment_lib.EVAL_CROP_FRACTION,
                                keep=("scores", "logits"))
  assert np.abs(full.logits - cropped.logits).max() > 1e-4

  # load_model: the run directory's classifier predicts with the run's crop.
  model = classifier.load_model(run_dir)
  assert model.crop_fraction == 1.0
  # Same inference function on the same batches in one process (same kernels): bit-equal in
  # practice; atol 1e-6 is far below the effect checked (a crop changes logits by > 1e-4).
  np.testing.assert_allclose(model.predict(valid, keep=("logits",)).logits, full.logits,
                             atol=1e-6)

  # evaluate_task with the run's crop reproduces the value model selection recorded.
  result, preds = stages.evaluate_task(task, valid, SIZE,
                                       crop_fraction=stages.eval_crop_fraction(run_config))
  np.testing.assert_allclose(preds.logits, full.logits, atol=1e-6)  # same path, as above
  best = io_utils.read_json(os.path.join(run_dir, stages.BEST_SUBDIR, stages.BEST_INFO))
  _, ci = task_metrics.main_metric(result, task_metrics.SELECTION_METRICS)
  assert ci["value"] == pytest.approx(best["value"])  # the same float64 value via JSON
