"""KerasHub presets of our models: KerasHub's own loaders read what convert_weights and
save_to_preset write, old-format presets still load, and kaggle:// / hf:// handles fail in
one line when they cannot be fetched.

(The fine-tuned classifier's round trip through ``ImageClassifier.from_preset`` with the
scores of ``evaluate`` is in tests/runs/test_evaluate.py, where a fine-tuned run exists.)
"""

import json
import os
import subprocess
import sys

import keras_hub
import numpy as np
import pytest
from keras_hub.src.utils import preset_utils

import remedis_tf  # noqa: F401  (registers the remedis_tf> classes with Keras)
from experiments import convert_weights
from remedis_tf.errors import CheckpointError
from remedis_tf.models.classifier import Classifier
from remedis_tf.models.heads import ClassificationHead, ProjectionHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.runs import classifier as classifier_lib
from remedis_tf.train import init_weights
from remedis_tf.weights import bit_npz, keras_hub_models, model_card, preset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _randomize(model, seed=0):
  rng = np.random.default_rng(seed)
  for v in model.weights:
    # Kernels around ±1, GN scales/BN variances positive: features of order 1.
    v.assign((0.5 + rng.random(v.shape)).astype(np.float32) * rng.choice([-1, 1], v.shape)
             if "kernel" in v.path else (0.5 + rng.random(v.shape)).astype(np.float32))
  return model


def _images(shape=(3, 40, 36, 3), seed=1):
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _feature_map(model, x):
  return np.asarray(model(x, training=False)["feature_map"])


def test_bit_npz_converts_to_a_preset_that_keras_hub_loads(tmp_path):
  npz = str(tmp_path / "bit_tiny.npz")
  bit_npz.save_bit_npz(_randomize(ResNetV2("tiny", num_classes=5).build_for(32)), npz,
                       include_head=True)
  out = str(tmp_path / "preset")
  line = convert_weights.convert(npz, out, output_format="preset", with_head=True,
                                 license="Apache-2.0")
  assert line.endswith(f"-> {out} (preset)")
  assert sorted(os.listdir(out)) == ["README.md", "config.json", "metadata.json",
                                     "model.weights.h5"]
  config = json.load(open(os.path.join(out, "config.json")))
  assert config["registered_name"] == "remedis_tf>BiTBackbone"
  assert config["config"]["variant"] == "tiny" and config["config"]["num_classes"] == 5

  backbone = keras_hub.models.Backbone.from_preset(out)  # KerasHub's own loader
  assert isinstance(backbone, keras_hub_models.BiTBackbone)
  ours = ResNetV2("tiny", num_classes=5).build_for(32)
  bit_npz.load_bit_npz(ours, npz, load_head=True)
  x = _images()
  # Same weights, same float32 ops in the same order (the KerasHub backbone runs our
  # ResNetV2 as its one inner layer): identical, no tolerance needed.
  np.testing.assert_array_equal(np.asarray(backbone(x)), _feature_map(ours, x))
  np.testing.assert_array_equal(np.asarray(backbone.resnet(x)["logits"]),
                                np.asarray(ours(x)["logits"]))
  # The BiT key map, and so .npz / SavedModel export, work on the inner ResNetV2.
  assert set(backbone.resnet.bit_variable_map()) == set(ours.bit_variable_map())

  # Our own loader reads the same folder (as a ResNetV2) and describes it.
  np.testing.assert_array_equal(_feature_map(preset.from_preset(out), x), _feature_map(ours, x))
  info = preset.preset_info(out)
  assert info["class_name"] == "ResNetV2" and info["backbone"] == {"variant": "tiny",
                                                                    "num_classes": 5}
  meta = info["metadata"]
  assert meta["format"] == "remedis_tf.keras_hub" and meta["format_version"] == 2
  assert meta["source"] == f"{npz} (npz)" and meta["keras_hub_version"] == keras_hub.__version__
  card = open(os.path.join(out, "README.md")).read()
  assert "library_name: keras-hub" in card and f"{npz} (npz)" in card
  assert "keras_hub.models.Backbone.from_preset" in card and "Apache-2.0" in card


def test_convert_weights_binary_writes_a_keras_hub_preset(tmp_path):
  npz = str(tmp_path / "bit_tiny.npz")
  bit_npz.save_bit_npz(_randomize(ResNetV2("tiny").build_for(32), seed=4), npz)
  out = str(tmp_path / "preset")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run([sys.executable, "-m", "experiments.convert_weights", f"--input={npz}",
                         f"--output={out}", "--output_format=preset"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  backbone = keras_hub.models.Backbone.from_preset(out)
  ours = ResNetV2("tiny").build_for(32)
  bit_npz.load_bit_npz(ours, npz)
  x = _images(seed=2)
  np.testing.assert_array_equal(np.asarray(backbone(x)), _feature_map(ours, x))  # as above


def test_backbone_save_to_preset_round_trips_through_keras_hub(tmp_path):
  backbone = keras_hub_models.BiTBackbone("tiny")
  _randomize(backbone.resnet, seed=3)
  backbone.save_to_preset(str(tmp_path / "p"))  # KerasHub's own writer
  again = keras_hub.models.Backbone.from_preset(str(tmp_path / "p"))
  assert again.get_config() == backbone.get_config()
  x = _images(seed=3)
  np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(backbone(x)))  # same ops


def _classifier(seed=5):
  head = ClassificationHead(3, zero_init=False, name="classification_head")
  model = Classifier(ResNetV2("tiny"), head, ProjectionHead(2, 16, 8, name="projection_head"),
                     1).build_for(32)
  return _randomize(model, seed)


def test_classifier_preset_keeps_labels_task_temperatures_and_transform(tmp_path):
  model = _classifier()
  record = {"temperature": {"a": 1.5, "b": 0.7, "c": 2.0}, "fitted_on": "val"}
  out = preset.save_to_preset(model, str(tmp_path / "cls"), image_size=32,
                              label_names=["a", "b", "c"], task="multilabel",
                              crop_fraction=0.8, temperature=record, source="unit test")
  hub = keras_hub.models.ImageClassifier.from_preset(out)
  assert isinstance(hub, keras_hub_models.RemedisImageClassifier)
  assert hub.label_names == ["a", "b", "c"] and hub.task == "multilabel"
  assert hub.temperature == [1.5, pytest.approx(0.7), 2.0] and hub.calibration == record
  converter = hub.preprocessor.image_converter
  assert converter.image_size == (32, 32) and converter.crop_fraction == pytest.approx(0.8)
  info = preset.preset_info(out)
  assert (info["class_name"], info["image_size"], info["crop_fraction"]) == ("Classifier", 32,
                                                                              pytest.approx(0.8))
  assert info["temperature"] == record
  # KerasHub's predict (its preprocessor applies our eval transform) = our scoring path on
  # the same images: centre crop + bicubic resize, then sigmoid(logits / T).
  raw = _images((4, 40, 36, 3), seed=6)
  loaded = classifier_lib.load_model(out)
  ours = loaded.forward(np.stack([
      keras_hub_models.eval_transform(im, 32, 0.8).numpy() for im in raw]))["scores"]
  # Same float32 weights and ops; predict runs them in one compiled function, where graph
  # rewrites may reorder float32 sums: bound 1e-6 on probabilities in (0, 1).
  np.testing.assert_allclose(hub.predict(raw, verbose=0), np.asarray(ours), rtol=0, atol=1e-6)
  card = open(os.path.join(out, "README.md")).read()
  assert "ImageClassifier.from_preset" in card and "a, b, c" in card
  assert "not recorded" in card  # no metrics or licence were given


def test_old_format_presets_still_load_and_convert(tmp_path):
  backbone = _randomize(ResNetV2("tiny").build_for(32), seed=7)
  old = preset.save_legacy_preset(backbone, str(tmp_path / "old_bb"), source="old writer")
  assert json.load(open(os.path.join(old, "config.json")))["format"] == "remedis_tf.preset"
  x = _images(seed=7)
  np.testing.assert_array_equal(_feature_map(preset.from_preset(old), x),
                                _feature_map(backbone, x))
  target = ResNetV2("tiny").build_for(32)
  init_weights.load_init(old, target)
  np.testing.assert_array_equal(_feature_map(target, x), _feature_map(backbone, x))
  new = str(tmp_path / "new_bb")
  convert_weights.convert(old, new, output_format="preset")
  np.testing.assert_array_equal(np.asarray(keras_hub.models.Backbone.from_preset(new)(x)),
                                _feature_map(backbone, x))
  cls = _classifier(seed=8)
  old_cls = preset.save_legacy_preset(cls, str(tmp_path / "old_cls"), image_size=32,
                                      label_names=["a", "b", "c"], task="multilabel")
  loaded = classifier_lib.load_model(old_cls)
  assert loaded.kind == "preset" and loaded.label_names == ("a", "b", "c")


def test_hub_handles_go_to_keras_hub_and_fail_in_one_line(monkeypatch):
  handle = "kaggle://someone/remedis/keras/cxr_r50x1"
  assert init_weights.init_kind(handle) == "preset"
  assert convert_weights.detect_input_format("hf://someone/remedis") == "preset"
  asked = []

  def offline(preset_handle, path):
    asked.append((preset_handle, path))
    raise ConnectionError("Failed to resolve 'api.kaggle.com'\n(Name or service not known)")

  monkeypatch.setattr(preset_utils, "get_file", offline)
  for load in (preset.from_preset, classifier_lib.load_model, preset.preset_info):
    with pytest.raises(CheckpointError) as e:
      load(handle)
    assert str(e.value).startswith(f"could not fetch KerasHub preset {handle}: ConnectionError")
    assert "\n" not in str(e.value)
  assert asked[0] == (handle, "config.json")  # KerasHub's downloader was asked


def test_offline_hf_handle_is_one_error_line_from_the_binary(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1",
             HF_HOME=str(tmp_path / "hf"))
  done = subprocess.run([sys.executable, "-m", "experiments.convert_weights",
                         "--input=hf://someone/remedis-none", f"--output={tmp_path / 'x'}",
                         "--output_format=preset"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 2
  errors = [l for l in done.stderr.splitlines() if l.startswith("error:")]
  assert errors == [l for l in done.stderr.splitlines() if l.strip()][-1:]
  assert errors[0].startswith("error: could not fetch KerasHub preset hf://someone/remedis-none")
  assert "Traceback" not in done.stderr


def test_model_card_lists_metrics_with_intervals_and_the_licence():
  info = {"class_name": "Classifier", "backbone": {"variant": "r50x1"}, "task": "multilabel",
          "label_names": ["Edema", "Effusion"], "image_size": 448, "crop_fraction": 0.875,
          "temperature": {"temperature": {"Edema": 1.2, "Effusion": 0.9}},
          "metadata": {"source": "/runs/cxr_remedis", "parameter_count": 23500352}}
  card = model_card.render(info, {
      "license": "Apache-2.0", "data": "fine-tuned on chexpert train.csv",
      "metrics": [{"set": "id_test", "metric": "mean_auc", "value": 0.8123, "lower": 0.79,
                   "upper": 0.83, "num_examples": 234},
                  {"set": "ood", "metric": "mean_auc", "value": 0.7, "lower": None,
                   "upper": None, "num_examples": 9}]})
  assert "license: apache-2.0" in card and "## Licence of the source weights\n\nApache-2.0" in card
  assert "| id_test | mean_auc | 0.8123 | [0.7900, 0.8300] | 234 |" in card
  assert "| ood | mean_auc | 0.7000 | — | 9 |" in card
  assert "/runs/cxr_remedis" in card and "fine-tuned on chexpert train.csv" in card
  assert "Edema, Effusion" in card and "resize to 448 px" in card and "Not a medical device" in card
  free_text = model_card.render(info, {"license": "PhysioNet credentialed licence"})
  assert "license: other" in free_text and "not recorded with this preset" in free_text
