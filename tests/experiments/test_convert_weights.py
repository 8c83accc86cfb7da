"""convert_weights: format detection and conversions in-process, the binary via subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from experiments import convert_weights
from remedis_tf.errors import CheckpointError, ConfigError
from remedis_tf.models.classifier import Classifier
from remedis_tf.models.heads import ClassificationHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.weights import bit_npz, checkpoint_io, preset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "weights"))
import bit_reference as ref  # noqa: E402  pylint: disable=g-import-not-at-top
from timm_reference import timm_state, write_safetensors  # noqa: E402  pylint: disable=g-import-not-at-top


def _random_tiny(num_classes=0, seed=0):
  model = ResNetV2("tiny", num_classes=num_classes).build_for(32)
  rng = np.random.default_rng(seed)
  for v in model.weights:
    v.assign(rng.standard_normal(v.shape).astype(np.float32))
  return model


def _images():
  return np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)


def test_format_detection(tmp_path):
  sm = tmp_path / "sm"
  sm.mkdir()
  (sm / "saved_model.pb").write_bytes(b"")
  assert convert_weights.detect_input_format("x/BiT-M-R50x1.npz") == "npz"
  assert convert_weights.detect_input_format(str(sm)) == "savedmodel"
  assert convert_weights.detect_input_format("https://tfhub.dev/google/bit/m-r50x1/1") == "hub"
  assert convert_weights.detect_input_format(str(tmp_path / "run")) == "checkpoint"
  assert convert_weights.detect_output_format("out.npz") == "npz"
  assert convert_weights.detect_output_format("out/backbone.ckpt") == "checkpoint"
  assert convert_weights.detect_output_format("out/exported") == "savedmodel"


def test_npz_checkpoint_savedmodel_npz_chain(tmp_path):
  model = _random_tiny(num_classes=4)
  src = bit_npz.save_bit_npz(model, str(tmp_path / "in.npz"))
  ckpt = str(tmp_path / "tiny.ckpt")
  summary = convert_weights.convert(src, ckpt, with_head=True)
  assert "tiny" in summary and "head 4 classes" in summary
  sm = str(tmp_path / "exported")
  convert_weights.convert(ckpt, sm, with_head=True)  # variant and head inferred
  out = str(tmp_path / "out.npz")
  convert_weights.convert(sm, out, with_head=True)
  back, orig = bit_npz.read_npz(out), bit_npz.read_npz(src)
  assert set(back) == set(orig)
  for k in orig:
    np.testing.assert_array_equal(back[k], orig[k], err_msg=k)
  # Without --with_head the head is dropped.
  convert_weights.convert(src, str(tmp_path / "nohead.npz"))
  assert not any(k.startswith("resnet/head") for k in bit_npz.read_npz(str(tmp_path / "nohead.npz")))


def test_run_directory_to_npz_and_inspect(tmp_path):
  model = _random_tiny(seed=3)
  ckpt = tf.train.Checkpoint(backbone=model, step=tf.Variable(5))
  tf.train.CheckpointManager(ckpt, str(tmp_path / "run" / "checkpoints"), 1).save()
  out = str(tmp_path / "run.npz")
  convert_weights.convert(str(tmp_path / "run"), out)
  fresh = ResNetV2("tiny")
  bit_npz.load_bit_npz(fresh, out)
  np.testing.assert_array_equal(fresh(_images())["feature_map"], model(_images())["feature_map"])
  names = [n for n, _, _ in convert_weights.inspect(str(tmp_path / "run"), "checkpoint")]
  assert "step/.ATTRIBUTES/VARIABLE_VALUE" in names
  with pytest.raises(CheckpointError, match="does not match"):
    convert_weights.convert(out, str(tmp_path / "x.ckpt"), variant="small")


def test_binary_converts(tmp_path):
  src = bit_npz.save_bit_npz(_random_tiny(seed=4), str(tmp_path / "in.npz"))
  sm = str(tmp_path / "sm")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-m", "experiments.convert_weights", "--input", src,
                         "--output", sm, "--image_size", "32"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "-> " + sm in proc.stdout
  loaded = tf.saved_model.load(sm)
  fresh = ResNetV2("tiny")
  bit_npz.load_bit_npz(fresh, src)
  # The same float32 BiT in two code paths: relative to the features' scale as for BiT
  # parity (bit_reference.REL_TOL = 1e-4, measured spread <= 4.2e-6 per path, >= 10x).
  want = fresh(_images())["feature_map"].numpy()
  np.testing.assert_allclose(loaded(_images()), want, atol=1e-4 * np.max(np.abs(want)))
  lines = convert_weights.inspect_lines(sm, "savedmodel")
  assert "resnet/root_block/standardized_conv2d/kernel\t[7, 7, 3, 8]\tfloat32" in lines
  assert len(lines) == 43


def test_binary_reports_user_errors_in_one_line(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-m", "experiments.convert_weights", "--input",
                         str(tmp_path / "missing.npz"), "--output", str(tmp_path / "o")],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert errors == [f"error: weights file not found: {tmp_path / 'missing.npz'}"]


def test_timm_safetensors_to_preset_to_npz(tmp_path):
  params = ref.random_params(ref.TINY, num_classes=6, seed=9)
  # No extension: the format is inferred from the file's first bytes.
  src = write_safetensors(tmp_path / "timm_weights", timm_state(params))
  assert convert_weights.detect_input_format(src) == "timm"
  out = str(tmp_path / "preset")
  summary = convert_weights.convert(src, out, output_format="preset", with_head=True,
                                    image_size=48)
  assert "(timm, tiny, loaded native, head 6 classes)" in summary and summary.endswith("(preset)")
  assert convert_weights.detect_input_format(out) == "preset"
  info = preset.preset_info(out)
  assert info["image_size"] == 48 and info["metadata"]["source"] == f"{src} (timm)"
  model = preset.from_preset(out)
  x = _images()
  fmap, _, logits = ref.forward(params, x * 2.0 - 1.0, ref.TINY)
  ref.assert_close(model(x)["feature_map"], fmap)
  ref.assert_close(model(x)["logits"], logits)
  # Preset as input: without --with_head the head is dropped; the npz holds timm's arrays.
  npz = str(tmp_path / "back.npz")
  convert_weights.convert(out, npz)
  back = bit_npz.read_npz(npz)
  assert set(back) == {k for k in params if not k.startswith("resnet/head")}
  for k, v in back.items():
    np.testing.assert_array_equal(v, params[k], err_msg=k)
  names = [n for n, _, _ in convert_weights.inspect(out, "preset")]
  # A KerasHub preset: the ResNetV2 is the BiTBackbone's inner layer (layers/res_net_v2/).
  assert (("layers/res_net_v2/layers/standardized_conv2d/vars/0", (7, 7, 3, 8), "float32")
          in convert_weights.inspect(out, "preset"))
  assert len(names) == 45
  assert ("stem.conv.weight", (8, 3, 7, 7), "float32") in convert_weights.inspect(src, "timm")


def test_every_input_format_writes_a_preset(tmp_path):
  model = _random_tiny(seed=6)
  npz = bit_npz.save_bit_npz(model, str(tmp_path / "in.npz"))
  ckpt = checkpoint_io.save_backbone_checkpoint(model, str(tmp_path / "ckpt" / "backbone"))
  x = _images()
  for i, src in enumerate((npz, ckpt)):  # SavedModel inputs load through the same ResNetV2
    out = str(tmp_path / f"p{i}")
    convert_weights.convert(src, out, output_format="preset")
    np.testing.assert_array_equal(preset.from_preset(out)(x)["feature_map"],
                                  model(x)["feature_map"])
  with pytest.raises(ConfigError, match="holds a tiny backbone"):
    convert_weights.convert(str(tmp_path / "p0"), str(tmp_path / "x.npz"), variant="small")


def test_classifier_preset_converts_as_its_backbone(tmp_path):
  cls = Classifier(_random_tiny(seed=8), ClassificationHead(2, zero_init=False,
                                                            name="classification_head")).build_for(32)
  src = preset.save_to_preset(cls, str(tmp_path / "cls"), label_names=["a", "b"], task="binary")
  out = str(tmp_path / "bb.npz")
  convert_weights.convert(src, out)
  fresh = ResNetV2("tiny")
  bit_npz.load_bit_npz(fresh, out)
  np.testing.assert_array_equal(fresh(_images())["pooled"], cls.backbone(_images())["pooled"])


def test_timm_shape_mismatch_is_one_line_and_writes_nothing(tmp_path):
  src = write_safetensors(tmp_path / "m.safetensors", timm_state(ref.random_params(ref.TINY)))
  out = tmp_path / "o"
  with pytest.raises(CheckpointError) as e:
    convert_weights.convert(src, str(out), variant="small", output_format="preset")
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"{src} does not match backbone small (timm layout)")
  assert "stem.conv.weight expected (16, 3, 7, 7) found (8, 3, 7, 7)" in msg
  assert msg.endswith(f"{src} looks like tiny")
  assert not out.exists()
