"""BiT .npz interop against the independent functional reference (bit_reference.py)."""

import os

import numpy as np
import pytest
import tensorflow as tf

import bit_reference as ref
from remedis_tf.errors import CheckpointError
from remedis_tf.models.resnet_v2 import ResNetSpec, ResNetV2
from remedis_tf.weights import bit_npz

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics


def _r26_narrow(num_classes=0):
  return ResNetV2("r26_narrow", num_classes=num_classes,
                  spec=ResNetSpec((2, 2, 2, 2), 1, base_width=8, num_groups=4))


def _images(shape=(2, 40, 36, 3), seed=1):
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("arch,make", [(ref.TINY, lambda: ResNetV2("tiny")),
                                        (ref.R26_NARROW, _r26_narrow)])
def test_npz_loads_and_matches_reference_forward(tmp_path, arch, make):
  params = ref.random_params(arch, seed=3)
  path = ref.write_npz(params, str(tmp_path / "bit.npz"))
  model = make()
  report = bit_npz.load_bit_npz(model, path)
  assert report.num_loaded == len(params) and report.head == "absent"
  x = _images()
  out = model(x)
  # The reference takes raw BiT input in [-1, 1]; the model must rescale [0, 1] itself.
  # It computes in float64; the tolerance is relative to the output's scale and measured
  # across CPUs' rounding (bit_reference.REL_TOL), so the claim does not rest on the last bit.
  fmap, pooled, _ = ref.forward(params, x * 2.0 - 1.0, arch)
  ref.assert_close(out["feature_map"], fmap)
  ref.assert_close(out["pooled"], pooled)


def test_reference_tolerance_rejects_a_bit_without_weight_standardisation(tmp_path):
  # The tolerance must still fail a wrong model: BiT without weight standardisation (the
  # kernels here have mean ~0 and variance ~1, so the difference is modest) is far outside.
  params = ref.random_params(ref.TINY, seed=3)
  model = ResNetV2("tiny")
  bit_npz.load_bit_npz(model, ref.write_npz(params, str(tmp_path / "bit.npz")))
  x = _images()
  wrong, _, _ = ref.forward(params, x * 2.0 - 1.0, ref.TINY, weight_standardization=False)
  assert ref.rel_diff(model(x)["feature_map"], wrong) > 100 * ref.REL_TOL


def test_head_loading_modes(tmp_path):
  params = ref.random_params(ref.TINY, num_classes=1000, seed=4)
  path = ref.write_npz(params, str(tmp_path / "bit_head.npz"))
  x = _images(seed=2)
  _, _, logits = ref.forward(params, x * 2.0 - 1.0, ref.TINY)

  with_head = ResNetV2("tiny", num_classes=1000)
  report = bit_npz.load_bit_npz(with_head, path, load_head=True)
  assert report.head == "loaded"
  ref.assert_close(with_head(x)["logits"], logits)  # float64 reference, REL_TOL

  headless = ResNetV2("tiny")
  report = bit_npz.load_bit_npz(headless, path)  # auto: backbone has no head
  assert report.head.startswith("skipped") and "resnet/head/conv2d/kernel" in report.ignored

  other_k = ResNetV2("tiny", num_classes=5).build_for(32)
  report = bit_npz.load_bit_npz(other_k, path, load_head="auto")
  assert report.head.startswith("skipped: head differs")
  np.testing.assert_array_equal(other_k.head.kernel.numpy(), 0.0)  # left untouched
  with pytest.raises(CheckpointError, match=r"head/conv2d/kernel expected \(1, 1, 256, 5\) "
                                            r"found \(1, 1, 256, 1000\)"):
    bit_npz.load_bit_npz(other_k, path, load_head=True)


def test_wrong_width_names_shapes_and_variant(tmp_path):
  path = ref.write_npz(ref.random_params(ref.SMALL), str(tmp_path / "small.npz"))
  model = ResNetV2("tiny")
  before = [v.numpy().copy() for v in model.build_for(32).weights]
  with pytest.raises(CheckpointError) as info:
    bit_npz.load_bit_npz(model, path)
  msg = str(info.value)
  assert "\n" not in msg
  assert "resnet/root_block/standardized_conv2d/kernel expected (7, 7, 3, 8) found (7, 7, 3, 16)" in msg
  assert "looks like small" in msg and path in msg
  # All-or-nothing: a failed load leaves the model untouched.
  for b, v in zip(before, model.weights):
    np.testing.assert_array_equal(b, v.numpy())


def test_missing_and_unexpected_keys(tmp_path):
  params = ref.random_params(ref.TINY)
  del params["resnet/block3/unit01/b/group_norm/beta"]
  params["resnet/block3/unit02/b/group_norm/beta"] = np.ones(32, np.float32)
  path = ref.write_npz(params, str(tmp_path / "broken.npz"))
  with pytest.raises(CheckpointError) as info:
    bit_npz.load_bit_npz(ResNetV2("tiny"), path)
  msg = str(info.value)
  assert "1 missing key(s): resnet/block3/unit01/b/group_norm/beta expected (32,)" in msg
  assert "1 unexpected key(s): resnet/block3/unit02/b/group_norm/beta found (32,)" in msg


def test_npz_round_trip_is_exact(tmp_path):
  params = ref.random_params(ref.TINY, num_classes=10, seed=7)
  src = ref.write_npz(params, str(tmp_path / "in.npz"))
  model = ResNetV2("tiny", num_classes=10)
  bit_npz.load_bit_npz(model, src, load_head=True)
  out = bit_npz.save_bit_npz(model, str(tmp_path / "out" / "out.npz"))
  back = bit_npz.read_npz(out)
  assert set(back) == set(params)
  assert back["resnet/head/conv2d/kernel"].shape == (1, 1, 256, 10)
  for k in params:
    np.testing.assert_array_equal(back[k], params[k], err_msg=k)
  assert os.listdir(tmp_path / "out") == ["out.npz"]  # no temporary left behind
  headless = bit_npz.read_npz(bit_npz.save_bit_npz(model, str(tmp_path / "nohead.npz"),
                                                   include_head=False))
  assert not any(k.startswith("resnet/head") for k in headless)


def test_read_npz_rejects_bad_files(tmp_path):
  with pytest.raises(CheckpointError, match="not found"):
    bit_npz.read_npz(str(tmp_path / "absent.npz"))
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip")
  with pytest.raises(CheckpointError, match="garbage.npz"):
    bit_npz.read_npz(str(garbage))
  pickled = str(tmp_path / "pickled.npz")
  np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
  with pytest.raises(CheckpointError, match="pickled.npz"):
    bit_npz.read_npz(pickled)


def test_guess_variant_from_shapes():
  for name, arch in (("tiny", ref.TINY), ("small", ref.SMALL)):
    assert bit_npz.guess_variant(ref.bit_shapes(arch[0], arch[1])) == name
  assert bit_npz.guess_variant(ref.bit_shapes((3, 4, 6, 3), 64, 1000)) == "r50x1"
  assert bit_npz.guess_variant(ref.bit_shapes((3, 4, 23, 3), 192)) == "r101x3"
  assert bit_npz.guess_variant(ref.bit_shapes((2, 2, 2, 2), 8)) is None
  assert bit_npz.guess_variant({}) is None


def test_loads_under_mirrored_strategy(tmp_path):
  params = ref.random_params(ref.TINY, seed=9)
  path = ref.write_npz(params, str(tmp_path / "bit.npz"))
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    model = ResNetV2("tiny").build_for(32)
  bit_npz.load_bit_npz(model, path)
  x = _images(seed=5)
  fmap, _, _ = ref.forward(params, x * 2.0 - 1.0, ref.TINY)
  ref.assert_close(model(x)["feature_map"], fmap)
