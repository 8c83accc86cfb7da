"""init_weights: which kind of --init a string is, and preset / timm inits."""

import os
import sys

import numpy as np
import pytest

from remedis_tf.errors import CheckpointError
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.train import init_weights
from remedis_tf.weights import preset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "weights"))
import bit_reference as ref  # noqa: E402  pylint: disable=g-import-not-at-top
from timm_reference import timm_state, write_safetensors  # noqa: E402  pylint: disable=g-import-not-at-top


def test_init_kinds(tmp_path):
  sm = tmp_path / "sm"
  sm.mkdir()
  (sm / "saved_model.pb").write_bytes(b"")
  bb = preset.save_to_preset(ResNetV2("tiny").build_for(32), str(tmp_path / "preset"))
  cases = {"": "none", "BiT-M-R50x1.npz": "npz", "model.safetensors": "timm",
           "pytorch_model.bin": "timm", "x/model.PTH": "timm", str(sm): "savedmodel",
           "https://tfhub.dev/google/bit/m-r50x1/1": "savedmodel", bb: "preset",
           str(tmp_path / "run"): "checkpoint"}
  for init, kind in cases.items():
    assert init_weights.init_kind(init) == kind, init


def test_preset_init_takes_the_preset_variant_when_none_is_given(tmp_path):
  model = ResNetV2("small").build_for(32)
  rng = np.random.default_rng(0)
  for v in model.weights:
    v.assign(rng.standard_normal(v.shape).astype(np.float32))
  path = preset.save_to_preset(model, str(tmp_path / "p"))
  backbone, _ = init_weights.build_backbone("", path, 32)
  assert backbone.variant == "small"
  notes = init_weights.load_init(path, backbone)
  assert "backbone from preset" in notes[0]
  x = np.random.default_rng(1).random((1, 32, 32, 3), dtype=np.float32)
  np.testing.assert_array_equal(backbone(x)["pooled"], model(x)["pooled"])
  with pytest.raises(CheckpointError, match="does not match backbone tiny"):
    init_weights.load_init(path, ResNetV2("tiny").build_for(32))


def test_timm_init_matches_reference_and_ignores_the_head(tmp_path):
  params = ref.random_params(ref.TINY, num_classes=21, seed=5)
  path = write_safetensors(tmp_path / "model.safetensors", timm_state(params))
  backbone, _ = init_weights.build_backbone("", path, 32)  # variant from the shapes
  assert backbone.variant == "tiny"
  notes = init_weights.load_init(path, backbone)
  assert "timm state dict" in notes[0] and "skipped" in notes[0]
  x = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
  ref.assert_close(backbone(x)["pooled"], ref.forward(params, x * 2.0 - 1.0, ref.TINY)[1])
  with pytest.raises(CheckpointError, match=r"stem\.conv\.weight expected \(16, 3, 7, 7\)"):
    init_weights.load_init(path, ResNetV2("small").build_for(32))
