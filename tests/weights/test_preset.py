"""Format-1 (remedis_tf, pre-KerasHub) presets: exact round trips (backbone, classifier), remote
paths, one-line errors. The reader stays so presets written before KerasHub support load."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.errors import CheckpointError
from remedis_tf.models.classifier import Classifier
from remedis_tf.models.heads import ClassificationHead, ProjectionHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.weights import preset


def _randomize(model, seed=0):
  rng = np.random.default_rng(seed)
  for v in model.weights:
    # Positive values keep BatchNorm moving variances valid.
    v.assign((0.5 + rng.random(v.shape)).astype(np.float32))
  return model


def _images():
  return np.random.default_rng(1).random((2, 40, 36, 3), dtype=np.float32)


def _classifier(projection=True):
  head = ClassificationHead(3, zero_init=False, name="classification_head")
  proj = ProjectionHead(2, 16, 8, name="projection_head") if projection else None
  return Classifier(ResNetV2("tiny"), head, proj, 1 if projection else 0).build_for(32)


def _assert_same_weights(a, b):
  assert [v.path for v in a.weights] == [v.path for v in b.weights]
  for va, vb in zip(a.weights, b.weights):
    np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)


def test_backbone_round_trip_is_bit_exact(tmp_path):
  model = _randomize(ResNetV2("tiny", num_classes=4).build_for(32))
  out = preset.save_legacy_preset(model, str(tmp_path / "bb"), image_size=40, source="unit test")
  assert sorted(os.listdir(out)) == ["config.json", "metadata.json", "model.weights.h5"]
  loaded = preset.from_preset(out)
  assert isinstance(loaded, ResNetV2) and loaded.variant == "tiny" and loaded.num_classes == 4
  _assert_same_weights(model, loaded)
  x = _images()
  for key in ("feature_map", "pooled", "logits"):
    np.testing.assert_array_equal(model(x)[key], loaded(x)[key])
  info = preset.preset_info(out)
  assert info["class_name"] == "ResNetV2" and info["image_size"] == 40
  meta = info["metadata"]
  assert meta["source"] == "unit test" and meta["keras_version"] and meta["tensorflow_version"]
  assert meta["parameter_count"] == 127432 + 256 * 4 + 4  # tiny backbone + head
  # The weights file is a plain Keras 3 save_weights file.
  fresh = ResNetV2("tiny", num_classes=4).build_for(32)
  fresh.load_weights(os.path.join(out, "model.weights.h5"))
  _assert_same_weights(model, fresh)


@pytest.mark.parametrize("projection", [True, False])
def test_classifier_round_trip_is_bit_exact(tmp_path, projection):
  model = _randomize(_classifier(projection), seed=2)
  out = preset.save_legacy_preset(model, str(tmp_path / "cls"), image_size=40,
                              label_names=["a", "b", "c"], task="multilabel", crop_fraction=0.875)
  loaded = preset.from_preset(out)
  assert isinstance(loaded, Classifier)
  assert (loaded.projection_head is None) == (not projection)
  _assert_same_weights(model, loaded)
  x = _images()
  np.testing.assert_array_equal(model(x)["logits"], loaded(x)["logits"])
  np.testing.assert_array_equal(model(x)["embedding"], loaded(x)["embedding"])
  assert np.all(np.isfinite(model(x)["logits"]))
  info = preset.preset_info(out)
  assert info["label_names"] == ["a", "b", "c"] and info["task"] == "multilabel"


def test_reads_through_gfile_from_a_remote_filesystem(tmp_path):
  model = _randomize(ResNetV2("tiny").build_for(32), seed=5)
  local = preset.save_legacy_preset(model, str(tmp_path / "bb"))
  remote = "ram://presets/bb"  # TF's in-memory filesystem stands in for gs://
  for name in os.listdir(local):
    tf.io.gfile.copy(os.path.join(local, name), f"{remote}/{name}", overwrite=True)
  assert preset.is_preset(remote)
  _assert_same_weights(model, preset.from_preset(remote + "/"))


def test_replaces_a_preset_but_not_another_folder(tmp_path):
  first = _randomize(ResNetV2("tiny").build_for(32), seed=1)
  second = _randomize(ResNetV2("tiny").build_for(32), seed=2)
  out = str(tmp_path / "p")
  preset.save_legacy_preset(first, out)
  preset.save_legacy_preset(second, out)
  _assert_same_weights(second, preset.from_preset(out))
  other = tmp_path / "notes"
  other.mkdir()
  (other / "keep.txt").write_text("x")
  with pytest.raises(CheckpointError, match="is not a preset"):
    preset.save_legacy_preset(first, str(other))
  assert (other / "keep.txt").exists()


def test_missing_and_bad_files_fail_in_one_line_naming_the_file(tmp_path):
  model = ResNetV2("tiny").build_for(32)
  good = preset.save_legacy_preset(model, str(tmp_path / "good"))

  def broken(name, edit):
    path = str(tmp_path / name)
    shutil.copytree(good, path)
    edit(path)
    return path

  def rewrite(file, **changes):
    def edit(path):
      cfg = json.load(open(os.path.join(path, file)))
      for k, v in changes.items():
        cfg[k] = v
      json.dump(cfg, open(os.path.join(path, file), "w"))
    return edit

  cases = [
      (str(tmp_path / "absent"), "absent/config.json: missing"),
      (broken("nometa", lambda p: os.remove(os.path.join(p, "metadata.json"))),
       "nometa/metadata.json: missing"),
      (broken("badjson", lambda p: open(os.path.join(p, "config.json"), "w").write("{x")),
       "badjson/config.json: unreadable JSON"),
      (broken("newer", rewrite("metadata.json", format_version=99)),
       "newer/metadata.json: format_version 99 is not supported"),
      (broken("variant", rewrite("config.json", backbone={"variant": "r77"})),
       "variant/config.json: unknown backbone variant 'r77'"),
      (broken("notkeras", lambda p: open(os.path.join(p, "model.weights.h5"), "wb").write(b"x")),
       "notkeras/model.weights.h5: not a readable HDF5 weights file"),
  ]
  for path, expected in cases:
    with pytest.raises(CheckpointError) as e:
      preset.from_preset(path)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_weight_mismatch_names_the_array_and_both_shapes(tmp_path):
  out = preset.save_legacy_preset(_randomize(ResNetV2("tiny").build_for(32)), str(tmp_path / "p"))
  cfg_path = os.path.join(out, "config.json")
  cfg = json.load(open(cfg_path))
  cfg["backbone"]["variant"] = "small"  # config now disagrees with the stored weights
  json.dump(cfg, open(cfg_path, "w"))
  with pytest.raises(CheckpointError) as e:
    preset.from_preset(out)
  msg = str(e.value)
  assert msg.startswith(os.path.join(out, "model.weights.h5") + " does not match the ResNetV2 (small)")
  # Listed in the model's order (root convolution first, the one that explains the rest),
  # not in the HDF5 file's alphabetical order (block1_unit01/… first, the root not among
  # the four listed). Keras files the root convolution under layers/.
  assert ("43 shape mismatch(es): layers/standardized_conv2d/vars/0 expected (7, 7, 3, 16) "
          "found (7, 7, 3, 8); block1_unit01/gn_a/vars/0") in msg
  # An array dropped from the file is reported as missing, not silently left random.
  cfg["backbone"]["variant"] = "tiny"
  json.dump(cfg, open(cfg_path, "w"))
  with h5py.File(os.path.join(out, "model.weights.h5"), "a") as f:
    del f["final_gn/vars/1"]
  with pytest.raises(CheckpointError, match=r"1 missing array\(s\): final_gn/vars/1 expected \(256,\)"):
    preset.from_preset(out)


def test_copy_preset_backbone_into_existing_backbone(tmp_path):
  cls = _randomize(_classifier(), seed=3)
  out = preset.save_legacy_preset(cls, str(tmp_path / "cls"))
  target = ResNetV2("tiny").build_for(32)
  report = preset.copy_backbone(preset.from_preset(out), target, source=out)
  assert report.num_loaded == len(target.weights)
  x = _images()
  np.testing.assert_array_equal(target(x)["pooled"], cls.backbone(x)["pooled"])
  with pytest.raises(CheckpointError, match="does not match backbone small: .*shape mismatch"):
    preset.copy_backbone(preset.from_preset(out), ResNetV2("small"), source=out)


def test_wrapped_savedmodel_backbones_are_refused():
  class NotNative(ResNetV2.__mro__[1]):  # a keras.Model that is not a ResNetV2
    pass
  with pytest.raises(CheckpointError, match="native ResNetV2"):
    preset.preset_config(NotNative())
