"""BiT ResNet-v2: numerics of its parts against numpy, shapes, placement, precision, scale."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.errors import ConfigError
from remedis_tf.models import resnet_v2
from remedis_tf.models.resnet_v2 import ResNetSpec, ResNetV2

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# float32 TensorFlow against float64 numpy references (weight standardisation: moments of <=
# 45 terms, GroupNorm: moments of <= 80 terms, within n*u ~ 5e-6 relative on O(1) values:
# atol 1e-5..1e-4), central-difference gradients in float64 with h = 1e-6 against TF's
# float32 gradient (truncation ~h^2, float32 loss rounding / h dominates: atol 2e-4), and
# the same model across code paths (GN kernel vs Keras GN, eager vs graph, mirrored vs one
# device) relative to the compared values' scale.
# Measured: every assert_allclose here used <= 0.074 of its tolerance (>= 14x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 260 comparisons).


def _images(shape, seed=0):
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _np_standardize(k):
  k = k.astype(np.float64)
  mean = k.mean(axis=(0, 1, 2), keepdims=True)
  var = ((k - mean) ** 2).mean(axis=(0, 1, 2), keepdims=True)
  return (k - mean) / np.sqrt(var + 1e-10)


def _np_group_norm(x, gamma, beta, groups, eps=1e-5):
  b, h, w, c = x.shape
  g = x.astype(np.float64).reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * gamma + beta


def _expected_params(spec: ResNetSpec, num_classes: int = 0) -> int:
  """Independent parameter count from the architecture description."""
  r = spec.root_filters
  total = 7 * 7 * 3 * r
  cin = r
  for b, n in enumerate(spec.units, start=1):
    f = spec.base_width * spec.width_factor * 2 ** (b - 1)
    for u in range(n):
      total += 2 * cin + cin * f + 2 * f + 9 * f * f + 2 * f + 4 * f * f
      if u == 0:
        total += cin * 4 * f
      cin = 4 * f
  total += 2 * cin
  return total + (cin * num_classes + num_classes if num_classes else 0)


def test_weight_standardisation_matches_numpy():
  k = np.random.default_rng(0).normal(3.0, 2.0, (3, 3, 5, 7)).astype(np.float32)
  got = resnet_v2.standardize_kernel(k).numpy()
  np.testing.assert_allclose(got, _np_standardize(k), atol=1e-5)
  # Applied at every call: the layer convolves with the standardised kernel.
  conv = resnet_v2.StandardizedConv2D(7, 3, use_bias=False)
  x = _images((1, 6, 6, 5))
  conv.build(x.shape)
  conv.kernel.assign(k)
  plain = tf.nn.conv2d(x, _np_standardize(k).astype(np.float32), 1, "VALID")
  np.testing.assert_allclose(conv(x), plain, atol=1e-4)


def test_group_norm_matches_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(2.0, 3.0, (2, 5, 4, 16)).astype(np.float32)
  gn = resnet_v2._group_norm(4, "gn")  # pylint: disable=protected-access
  gn.build(x.shape)
  gamma = rng.normal(1, 0.3, 16).astype(np.float32)
  beta = rng.normal(0, 0.3, 16).astype(np.float32)
  gn.gamma.assign(gamma)
  gn.beta.assign(beta)
  np.testing.assert_allclose(gn(x), _np_group_norm(x, gamma, beta, 4), atol=1e-4)


@pytest.mark.parametrize("relu", [True, False])
def test_group_norm_relu_gradients_match_numpy_finite_differences(relu):
  """The hand-written GroupNorm(+ReLU) backward against central differences of a float64
  numpy forward, for every input element, gamma and beta."""
  rng = np.random.default_rng(7)
  x = rng.normal(0.5, 2.0, (2, 3, 3, 8))
  gamma, beta = rng.normal(1, 0.5, 8), rng.normal(0, 0.5, 8)
  w = rng.normal(size=x.shape)
  gn = resnet_v2._group_norm(2, "gn", relu=relu)  # pylint: disable=protected-access
  gn.build(x.shape)
  gn.gamma.assign(gamma.astype(np.float32))
  gn.beta.assign(beta.astype(np.float32))
  xt = tf.constant(x, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(xt)
    loss = tf.reduce_sum(gn(xt) * w.astype(np.float32))
  dx, dgamma, dbeta = tape.gradient(loss, [xt, gn.gamma, gn.beta])
  act = (lambda v: np.maximum(v, 0.0)) if relu else (lambda v: v)
  f = lambda x_, g_, b_: float(np.sum(act(_np_group_norm(x_, g_, b_, 2)) * w))
  np.testing.assert_allclose(loss.numpy(), f(x, gamma, beta), rtol=1e-5)
  h = 1e-6

  def numeric(array, call):
    out = np.zeros_like(array)
    for i in np.ndindex(array.shape):
      e = np.zeros_like(array)
      e[i] = h
      out[i] = (call(array + e) - call(array - e)) / (2 * h)
    return out

  np.testing.assert_allclose(dx, numeric(x, lambda v: f(v, gamma, beta)), atol=2e-4)
  np.testing.assert_allclose(dgamma, numeric(gamma, lambda v: f(x, v, beta)), atol=2e-4)
  np.testing.assert_allclose(dbeta, numeric(beta, lambda v: f(x, gamma, v)), atol=2e-4)
  assert np.max(np.abs(dx)) > 0.1  # the check is not vacuous


def test_group_norm_relu_equals_keras_group_norm_within_float32_rounding():
  """Forward and gradients agree with Keras' GroupNormalization followed by a ReLU, in
  eager mode and in a graph with unknown batch and spatial sizes."""
  rng = np.random.default_rng(8)
  x = rng.normal(3.0, 2.0, (3, 9, 7, 64)).astype(np.float32)
  w = rng.normal(size=x.shape).astype(np.float32)
  fast = resnet_v2._group_norm(8, "fast", relu=True)  # pylint: disable=protected-access
  ref = keras.layers.GroupNormalization(groups=8, epsilon=resnet_v2.GN_EPSILON)
  for layer in (fast, ref):
    layer.build(x.shape)
    layer.gamma.assign(rng.normal(1, 0.3, 64).astype(np.float32))
    layer.beta.assign(rng.normal(0, 0.3, 64).astype(np.float32))
  ref.gamma.assign(fast.gamma)
  ref.beta.assign(fast.beta)

  def grads(apply, layer, xt):
    with tf.GradientTape() as tape:
      tape.watch(xt)
      y = apply(xt)
      loss = tf.reduce_sum(y * w)
    return [y] + tape.gradient(loss, [xt, layer.gamma, layer.beta])

  graph = tf.function(lambda xt: grads(fast, fast, xt),
                      input_signature=[tf.TensorSpec([None, None, None, 64], tf.float32)])
  want = grads(lambda xt: tf.nn.relu(ref(xt)), ref, tf.constant(x))
  for got in (grads(fast, fast, tf.constant(x)), graph(tf.constant(x))):
    for a, b in zip(got, want):
      scale = np.max(np.abs(b.numpy()))
      assert scale > 0.1
      np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5 * scale)
  assert np.min(want[0].numpy()) == 0.0  # the ReLU is applied
  config = fast.get_config()
  assert config["relu"] is True and config["groups"] == 8
  assert isinstance(fast, keras.layers.GroupNormalization)  # optimizers' norm exclusion


@pytest.mark.parametrize("hw", [(32, 32), (33, 47), (95, 64)])
def test_output_shapes(hw):
  model = ResNetV2("tiny", num_classes=3)
  out = model(_images((2,) + hw + (3,)))
  h, w = (math.ceil(d / 32) for d in hw)
  assert out["feature_map"].shape == (2, h, w, 256)
  assert out["pooled"].shape == (2, 256)
  assert out["logits"].shape == (2, 3)
  assert set(ResNetV2("tiny")(_images((1, 32, 32, 3)))) == {"feature_map", "pooled"}


def _manual_forward(model, x_m11):
  x = model.root_pool(model.pool_pad(model.root_conv(model.root_pad(x_m11))))
  for units in model.blocks:
    for unit in units:
      x = unit(x)
  return tf.nn.relu(model.final_gn(x))


def test_input_is_rescaled_inside():
  model = ResNetV2("tiny").build_for(32)
  x = _images((2, 32, 32, 3), seed=2)
  fmap = model(x)["feature_map"].numpy()
  np.testing.assert_allclose(fmap, _manual_forward(model, x * 2.0 - 1.0), atol=1e-5)
  assert np.max(np.abs(fmap - _manual_forward(model, x).numpy())) > 1e-2


@pytest.mark.parametrize("variant", ["r50x1", "r152x2", "tiny"])
def test_projection_only_on_first_unit_of_each_block(variant):
  model = ResNetV2(variant)  # placement is decided at construction; nothing is built
  for b, units in enumerate(model.blocks, start=1):
    for u, unit in enumerate(units, start=1):
      assert (unit.proj is not None) == (u == 1), (b, u)
      assert unit.stride == (2 if (u == 1 and b > 1) else 1)


def test_identity_shortcut_when_shapes_allow():
  spec = ResNetSpec((2, 2, 1, 1), 1, base_width=8, num_groups=4)
  model = ResNetV2("custom", spec=spec).build_for(32)
  keys = [k for k in model.bit_variable_map() if "/proj/" in k]
  assert keys == [f"resnet/block{b}/unit01/a/proj/standardized_conv2d/kernel"
                  for b in (1, 2, 3, 4)]
  # In an identity unit, zeroing the residual branch returns the raw input unchanged.
  unit = model.blocks[0][1]
  unit.gn_c.gamma.assign(np.zeros(8, np.float32))
  unit.gn_c.beta.assign(np.zeros(8, np.float32))
  x = np.random.default_rng(3).normal(size=(1, 8, 8, 32)).astype(np.float32)
  np.testing.assert_allclose(unit(x), x, atol=1e-6)


def test_mixed_bfloat16():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = ResNetV2("tiny", num_classes=2)
    out = model(_images((2, 48, 48, 3)))
    gn = resnet_v2._group_norm(4, "gn")  # pylint: disable=protected-access
    # Values with a large offset: float32 statistics keep the normalised output accurate.
    x = (1000.0 + 8.0 * np.random.default_rng(4).standard_normal((2, 4, 4, 8)))
    x = tf.cast(tf.constant(x, tf.float32), tf.bfloat16)
    y = gn(x)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert out["feature_map"].dtype == "bfloat16"
  assert all(v.dtype == "float32" for v in model.weights)
  for t in out.values():
    assert np.all(np.isfinite(tf.cast(t, tf.float32).numpy()))
  expected = _np_group_norm(tf.cast(x, tf.float32).numpy(), 1.0, 0.0, 4)
  # Derived: y is rounded to bfloat16 (8 significant bits); |y| < 4 gives a half-ulp of
  # 2^-7 = 0.0078 (measured 0.0071), float32 statistics add ~1e-5. bfloat16 statistics at an
  # offset of 1000 (ulp 4) would be off by O(1).
  np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected, atol=0.03)


def test_mirrored_strategy_matches_single_device():
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    model = ResNetV2("tiny").build_for(32)
    opt = keras.optimizers.SGD(0.1)
    opt.build(model.trainable_variables)
  single = ResNetV2("tiny").build_for(32)
  for a, b in zip(single.weights, model.weights):
    a.assign(b.numpy())
  x = _images((4, 32, 32, 3), seed=5)
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensor_slices(x).batch(4))

  @tf.function
  def step(batch):
    def replica(images):
      with tf.GradientTape() as tape:
        pooled = model(images)["pooled"]
        loss = tf.reduce_sum(pooled) / 4.0
      grads = tape.gradient(loss, model.trainable_variables)
      opt.apply_gradients(zip(grads, model.trainable_variables))
      return pooled
    return strategy.run(replica, args=(batch,))

  pooled = strategy.gather(step(next(iter(dataset))), axis=0)
  # Two replicas vs one device: different conv/reduction splits of the same float32
  # function. Measured max |diff| 1.7e-06 on pooled features (scale ~2) and 4.2e-06 on the
  # weights after one step; tolerances relative to the compared values' scale, >= 10x.
  want = single(x)["pooled"].numpy()
  np.testing.assert_allclose(pooled, want, atol=1e-4 * np.max(np.abs(want)))
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(single(x)["pooled"]) / 4.0
  grads = tape.gradient(loss, single.trainable_variables)
  keras.optimizers.SGD(0.1).apply_gradients(zip(grads, single.trainable_variables))
  weight_scale = max(float(np.max(np.abs(v.numpy()))) for v in single.trainable_variables)
  for a, b in zip(single.trainable_variables, model.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4 * weight_scale)


def test_checkpoint_tracks_every_variable(tmp_path):
  model = ResNetV2("tiny", num_classes=2).build_for(32)
  prefix = tf.train.Checkpoint(backbone=model).write(str(tmp_path / "ck"))
  stored = [k for k, _ in tf.train.list_variables(prefix) if k.startswith("backbone/")]
  assert len(stored) == len(model.weights)


def test_r50x1_has_bits_published_parameter_count():
  model = ResNetV2("r50x1").build_for(32)
  assert resnet_v2.count_params(model) == 23_500_352
  assert len(model.bit_variable_map()) == len(model.weights)


@pytest.mark.parametrize("variant", ["tiny", "small", "r26x1"])
def test_parameter_count_formula_matches_built_models(variant):
  model = ResNetV2(variant, num_classes=10).build_for(32)
  assert resnet_v2.count_params(model) == _expected_params(model.spec, 10)


def test_parameter_counts_of_every_variant():
  counts = {v: _expected_params(s) for v, s in resnet_v2.VARIANTS.items()}
  assert counts["r50x1"] == 23_500_352
  # Width factor w multiplies every conv's in and out channels: ~w^2 more parameters.
  assert 8.5 < counts["r50x3"] / counts["r50x1"] < 9.0
  assert counts["r101x1"] > counts["r50x1"] > counts["r26x1"] > counts["small"] > counts["tiny"]
  assert counts["r152x4"] > counts["r101x3"] > counts["r152x2"] > counts["r101x1"]


def test_unknown_variant_raises_config_error():
  with pytest.raises(ConfigError, match="r50x9"):
    ResNetV2("r50x9")
  assert resnet_v2.get_spec("R50-x1") == resnet_v2.VARIANTS["r50x1"]


def test_bit_variable_map_needs_a_built_model():
  with pytest.raises(RuntimeError):
    ResNetV2("tiny").bit_variable_map()
