"""timm BiT state dicts (safetensors written here by our own writer) → ResNetV2, against the
independent reference forward (bit_reference.py); and the numpy safetensors reader."""

import json
import struct
import sys

import numpy as np
import pytest

import bit_reference as ref
from timm_reference import timm_state, write_safetensors
from remedis_tf.errors import CheckpointError
from remedis_tf.models.resnet_v2 import ResNetSpec, ResNetV2
from remedis_tf.weights import safetensors_io, timm_bit

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# timm state dicts against the float64 reference: bit_reference.REL_TOL (1e-4 of the
# output's scale, measured spread <= 4.2e-6). The epsilon test compares two float64
# forwards, so rel is the true effect of eps 1e-8 vs 1e-10, not rounding.
# Measured: the BiT spread (<= 4.2e-6 of the output's scale, default, oneDNN-off and one-
# thread rows, seeds 0-3) is recorded beside REL_TOL in bit_reference.py.


def _r26_narrow(num_classes=0):
  return ResNetV2("r26_narrow", num_classes=num_classes,
                  spec=ResNetSpec((2, 2, 2, 2), 1, base_width=8, num_groups=4))


def _images(seed=1):
  return np.random.default_rng(seed).random((2, 40, 36, 3), dtype=np.float32)


@pytest.mark.parametrize("arch,make", [(ref.TINY, lambda k: ResNetV2("tiny", num_classes=k)),
                                        (ref.R26_NARROW, _r26_narrow)])
def test_safetensors_state_dict_matches_reference_forward(tmp_path, arch, make):
  params = ref.random_params(arch, num_classes=5, seed=7)
  path = write_safetensors(tmp_path / "model.safetensors", timm_state(params),
                           metadata={"format": "pt"})
  state = timm_bit.read_state_dict(path)
  model = make(5)
  report = timm_bit.load_timm_into(model, state, load_head=True, source=path)
  assert report.num_loaded == len(params) and report.head == "loaded"
  x = _images()
  out = model(x)
  fmap, pooled, logits = ref.forward(params, x * 2.0 - 1.0, arch)
  # Against the float64 reference, relative to the output's scale (bit_reference.REL_TOL:
  # measured spread <= 4.2e-6, >= 20x margin); a wrong key or layout gives O(1) differences.
  ref.assert_close(out["feature_map"], fmap)
  ref.assert_close(out["pooled"], pooled)
  ref.assert_close(out["logits"], logits)


def test_timm_epsilon_difference_is_small_for_he_scaled_kernels():
  # timm standardises with eps 1e-8, we (and BiT) with 1e-10. With kernels of He-init
  # variance (2 / fan_in) the features of the two differ by far less than 1e-3 relative,
  # while a 100x larger eps would show; the measured size is documented in docs/weights.md.
  params = ref.random_params(ref.TINY, seed=2)
  rng = np.random.default_rng(3)
  for k, v in params.items():
    if v.ndim == 4:
      params[k] = (rng.standard_normal(v.shape) * np.sqrt(2.0 / np.prod(v.shape[:3]))
                   ).astype(np.float32)
  x = _images() * 2.0 - 1.0
  ours = ref.forward(params, x, ref.TINY)[1].numpy()
  timm = ref.forward(params, x, ref.TINY, ws_epsilon=timm_bit.TIMM_EPSILON)[1].numpy()
  far = ref.forward(params, x, ref.TINY, ws_epsilon=1e-4)[1].numpy()
  rel = np.max(np.abs(ours - timm)) / np.max(np.abs(ours))
  assert 0 < rel < 1e-4
  assert np.max(np.abs(ours - far)) / np.max(np.abs(ours)) > 10 * rel


def test_key_mapping_round_trips_and_rejects_non_bit_keys():
  shapes = ref.bit_shapes((3, 4, 6, 3), 64, num_classes=1000)  # r50x1
  timm_keys = {timm_bit.bit_key_to_timm(k) for k in shapes}
  assert len(timm_keys) == len(shapes)
  assert {timm_bit.timm_key_to_bit(k) for k in timm_keys} == set(shapes)
  assert "stages.3.blocks.2.conv3.weight" in timm_keys
  assert "stages.0.blocks.0.downsample.conv.weight" in timm_keys
  assert "stages.1.blocks.1.downsample.conv.weight" not in timm_keys
  for bad in ("stem.norm.weight", "stages.0.blocks.0.conv1.bias", "fc.weight",
              "stages.0.blocks.0.norm1.running_mean"):
    assert timm_bit.timm_key_to_bit(bad) is None


def test_guess_variant_names_timm_models_from_shapes_alone():
  shapes = ref.bit_shapes((3, 4, 23, 3), 64 * 3, num_classes=21843)  # r101x3
  # Zero-size-in-memory arrays with the right shapes stand in for the 1.5 GB of weights.
  state = {timm_bit.bit_key_to_timm(k): np.broadcast_to(np.float32(0), timm_bit.timm_shape(s))
           for k, s in shapes.items()}
  assert timm_bit.guess_variant(state) == "r101x3"
  assert timm_bit.timm_model_name("r101x3") == "resnetv2_101x3_bit"


def test_shape_mismatch_names_timm_key_and_both_shapes(tmp_path):
  state = timm_state(ref.random_params(ref.TINY, seed=1))
  with pytest.raises(CheckpointError) as e:
    timm_bit.load_timm_into(ResNetV2("small"), state, source="x.safetensors")
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("x.safetensors does not match backbone small")
  assert "stem.conv.weight expected (16, 3, 7, 7) found (8, 3, 7, 7)" in msg
  # A missing and an unexpected key are named too; nothing was assigned.
  model = ResNetV2("tiny").build_for(32)
  before = [v.numpy().copy() for v in model.weights]
  broken = dict(state)
  del broken["stages.2.blocks.0.norm2.bias"]
  broken["stages.0.blocks.0.conv1.bias"] = np.zeros(8, np.float32)
  with pytest.raises(CheckpointError,
                     match=r"missing key\(s\): stages\.2\.blocks\.0\.norm2\.bias expected \(32,\)"
                           r".*unexpected key\(s\): stages\.0\.blocks\.0\.conv1\.bias found \(8,\)"):
    timm_bit.load_timm_into(model, broken)
  assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))


def test_prefixed_linear_head_and_head_rules(tmp_path):
  params = ref.random_params(ref.TINY, num_classes=3, seed=4)
  state = timm_state(params)
  state["head.fc.weight"] = state["head.fc.weight"][:, :, 0, 0]  # a Linear head [K, C]
  state = {"module." + k: v for k, v in state.items()}
  model = ResNetV2("tiny", num_classes=3)
  timm_bit.load_timm_into(model, state, load_head=True)
  np.testing.assert_array_equal(model.head.kernel.numpy(),
                                params["resnet/head/conv2d/kernel"][0, 0])
  headless = ResNetV2("tiny")
  report = timm_bit.load_timm_into(headless, state)  # auto: the head is skipped
  assert report.head.startswith("skipped")


def test_bf16_and_f16_tensors_decode_exactly(tmp_path):
  rng = np.random.default_rng(0)
  a = rng.standard_normal((3, 4)).astype(np.float32)
  h = rng.standard_normal((5,)).astype(np.float16)
  i = np.arange(6, dtype=np.int64).reshape(2, 3)
  path = write_safetensors(tmp_path / "t.safetensors", {"a": a, "h": h, "i": i}, bf16=("a",),
                           metadata={"k": "v"})
  tensors, metadata = safetensors_io.read_safetensors(path)
  truncated = (a.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
  np.testing.assert_array_equal(tensors["a"], truncated)
  assert tensors["a"].dtype == np.float32
  np.testing.assert_array_equal(tensors["h"], h)
  np.testing.assert_array_equal(tensors["i"], i)
  assert metadata == {"k": "v"}


def test_bad_safetensors_files_fail_in_one_line(tmp_path):
  good = write_safetensors(tmp_path / "g.safetensors", {"w": np.ones((2, 2), np.float32)})
  data = open(good, "rb").read()
  cases = {"short.safetensors": data[:5], "trunc.safetensors": data[:-4],
           "json.safetensors": struct.pack("<Q", 4) + b"{x:1" + b"\0" * 16}
  (n,) = struct.unpack("<Q", data[:8])
  header = json.loads(data[8:8 + n])
  header["w"]["dtype"] = "C64"
  blob = json.dumps(header).encode()
  cases["dtype.safetensors"] = struct.pack("<Q", len(blob)) + blob + data[8 + n:]
  patterns = {"short.safetensors": "not a safetensors file", "trunc.safetensors": "data offsets",
              "json.safetensors": "unreadable safetensors header",
              "dtype.safetensors": "unsupported dtype C64"}
  for name, content in cases.items():
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=patterns[name]) as e:
      safetensors_io.read_safetensors(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(CheckpointError, match="weights file not found"):
    timm_bit.read_state_dict(str(tmp_path / "absent.safetensors"))


def test_format_from_content_and_pth_without_torch(tmp_path, monkeypatch):
  path = write_safetensors(tmp_path / "weights_no_extension",
                           timm_state(ref.random_params(ref.TINY)))
  assert timm_bit.file_kind(path) == "safetensors"
  assert "stem.conv.weight" in timm_bit.read_state_dict(path)
  pth = tmp_path / "model.pth"
  pth.write_bytes(b"PK\x03\x04 not really torch")
  assert timm_bit.file_kind(str(pth)) == "torch"
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
  with pytest.raises(CheckpointError) as e:
    timm_bit.read_state_dict(str(pth))
  assert "needs torch" in str(e.value) and ".safetensors" in str(e.value)
  assert "\n" not in str(e.value)
