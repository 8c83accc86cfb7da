"""Tests for remedis_tf.optim.factory."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from remedis_tf import configs
from remedis_tf.errors import ConfigError
from remedis_tf.models.heads import ClassificationHead, ProjectionHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.optim import factory, schedules
from remedis_tf.optim.lars import LARS
from remedis_tf.train import strategy as strategy_lib
from tests.optim.lars_flags import exclusion_flags

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# learning rates and optimizer steps evaluated by TensorFlow in float32 against exact
# python/numpy float64 values: a schedule value is a few float32 operations (a product, a
# cosine), within a few u ~ 3e-7 relative, so rel 1e-6..1e-5 and pytest.approx's default
# (rel 1e-6) hold; two SGD steps against numpy float64 likewise (rtol 1e-6).
# Measured: every assert_allclose here used <= 0.057 of its tolerance (>= 17x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 60 comparisons).


def test_unknown_name_lists_valid_optimizers():
  with pytest.raises(ConfigError) as info:
    factory.OptimizerConfig(name="adam")
  message = str(info.value)
  assert "name" in message and all(n in message for n in factory.OPTIMIZERS)
  assert "\n" not in message


@pytest.mark.parametrize("changes, field", [
    (dict(schedule="step"), "schedule"),
    (dict(lr_scaling="log"), "lr_scaling"),
    (dict(base_lr=0.0), "base_lr"),
    (dict(total_steps=0), "total_steps"),
    (dict(warmup_steps=2000), "warmup_steps"),
    (dict(schedule="constant", warmup_steps=10), "warmup_steps"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(momentum=1.0), "momentum"),
    (dict(trust_coefficient=0.0), "trust_coefficient"),
    (dict(nesterov=True), "nesterov"),
    (dict(boundaries=(1, 2, 3)), "boundaries"),
    (dict(schedule="bit_hyperrule", boundaries=(5, 3, 1000)), "boundaries"),
    (dict(schedule="bit_hyperrule", boundaries=(5, 10, 20)), "boundaries"),
    (dict(schedule="bit_hyperrule", warmup_steps=500, total_steps=1000), "warmup_steps"),
])
def test_config_validation_names_the_field(changes, field):
  with pytest.raises(ConfigError, match=f"OptimizerConfig.{field}="):
    factory.OptimizerConfig(**changes)


def _bit_hyperrule_config(dataset_size, base_lr=0.003, step_scale=1.0):
  """BiT-HyperRule's SGD config at the table's own batch (512); the library plans runs
  with train/finetune_plan instead."""
  steps = schedules.scale_steps(schedules.bit_hyperrule(dataset_size, 512)["steps"],
                                step_scale)
  return factory.OptimizerConfig(name="sgd", base_lr=base_lr, lr_scaling="linear",
                                 schedule="bit_hyperrule", warmup_steps=steps[0],
                                 total_steps=steps[-1], weight_decay=0.0, momentum=0.9,
                                 boundaries=tuple(steps))


def test_config_json_round_trip():
  cfg = _bit_hyperrule_config(5000, step_scale=0.1)
  assert cfg.boundaries == (10, 20, 30, 40, 50) and cfg.name == "sgd"
  assert configs.from_dict(factory.OptimizerConfig, configs.to_dict(cfg)) == cfg


def _lr_at(optimizer, step):
  optimizer.iterations.assign(step)
  return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_learning_rates_are_scaled_and_scheduled():
  lars = factory.build_optimizer(
      factory.OptimizerConfig(name="lars", base_lr=0.3, warmup_steps=10, total_steps=110),
      global_batch_size=1024)
  assert isinstance(lars, LARS)
  assert _lr_at(lars, 5) == pytest.approx(0.6, rel=1e-6)      # 1.2 peak, half warmed up
  assert _lr_at(lars, 10) == pytest.approx(1.2, rel=1e-6)
  assert _lr_at(lars, 60) == pytest.approx(0.6, rel=1e-5)
  sqrt = factory.build_optimizer(
      factory.OptimizerConfig(lr_scaling="sqrt", base_lr=0.05, schedule="constant"), 400)
  assert _lr_at(sqrt, 3) == pytest.approx(1.0, rel=1e-6)
  # BiT-HyperRule defaults to a reference batch of 512.
  bit = factory.build_optimizer(_bit_hyperrule_config(100_000), 256)
  assert isinstance(bit, keras.optimizers.SGD) and bit.momentum == 0.9
  assert _lr_at(bit, 250) == pytest.approx(0.0015 * 250 / 500, rel=1e-5)
  assert _lr_at(bit, 3500) == pytest.approx(0.00015, rel=1e-5)
  derived = factory.OptimizerConfig(name="sgd", schedule="bit_hyperrule", warmup_steps=5,
                                    total_steps=100, base_lr=0.1, reference_batch_size=64)
  assert derived.hyperrule_boundaries() == (5, 30, 60, 90, 100)
  assert _lr_at(factory.build_optimizer(derived, 64), 65) == pytest.approx(0.001, rel=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adamw", "lamb", "lars"])
def test_weight_decay_skips_excluded_variables(name):
  kept = keras.Variable(np.full((3,), 2.0, np.float32), name="kernel")
  excluded = keras.Variable(np.full((3,), 2.0, np.float32), name="bias")
  cfg = factory.OptimizerConfig(name=name, base_lr=0.1, lr_scaling="none", schedule="constant",
                                weight_decay=0.5, momentum=0.0)
  opt = factory.build_optimizer(cfg, 256, variables=[kept, excluded], exclude=[excluded])
  assert opt.built
  # Zero gradients: only weight decay can move a variable.
  opt.apply_gradients([(tf.zeros(3), kept), (tf.zeros(3), excluded)])
  np.testing.assert_array_equal(np.asarray(excluded), np.full(3, 2.0))
  assert np.all(np.asarray(kept) < 2.0)
  if name == "sgd":  # decoupled decay: w - lr*wd*w
    np.testing.assert_allclose(np.asarray(kept), 2.0 - 0.1 * 0.5 * 2.0, rtol=1e-6)
  if name == "lars":  # coupled decay with trust ratio 0.001*|w|/|wd*w|
    np.testing.assert_allclose(np.asarray(kept), 2.0 - 0.1 * 0.001 / 0.5 * 0.5 * 2.0,
                               rtol=1e-6)


def _two_steps(cfg, w0, grads):
  w = keras.Variable(np.asarray(w0, np.float32), name="kernel")
  opt = factory.build_optimizer(cfg, 256, variables=[w])
  for g in grads:
    opt.apply_gradients([(tf.constant(g, tf.float32), w)])
  return np.asarray(w, np.float64)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_weight_decay_l2_by_default_and_decoupled_on_request(nesterov):
  """Regression: stage-1 SGD used Keras' decoupled decay; BiT's recipe is L2 (wd·w in the
  gradient, so momentum accumulates it). Two momentum steps checked against numpy."""
  lr, wd, m = 0.1, 0.05, 0.9
  w0 = np.array([2.0, -1.0, 0.5])
  grads = [np.array([0.3, 0.2, -0.1]), np.array([-0.2, 0.4, 0.1])]
  base = dict(name="sgd", base_lr=lr, lr_scaling="none", schedule="constant",
              weight_decay=wd, momentum=m, nesterov=nesterov)

  def numpy_sgd(l2, decoupled):
    w, v = w0.copy(), np.zeros(3)
    for g in grads:
      w = w - lr * decoupled * w  # Keras applies decoupled decay before the update
      g = g + l2 * w
      v = m * v - lr * g
      w = w + (m * v - lr * g if nesterov else v)
    return w

  recipe = factory.OptimizerConfig(**base)
  assert recipe.weight_decay_mode == "l2"
  np.testing.assert_allclose(_two_steps(recipe, w0, grads), numpy_sgd(wd, 0.0), rtol=1e-6)
  decoupled = factory.OptimizerConfig(**base, weight_decay_mode="decoupled")
  np.testing.assert_allclose(_two_steps(decoupled, w0, grads), numpy_sgd(0.0, wd), rtol=1e-6)
  assert not np.allclose(numpy_sgd(wd, 0.0), numpy_sgd(0.0, wd), rtol=1e-3)


def test_l2_decay_is_about_ten_times_the_decoupled_one_under_momentum():
  """With no data gradient, L2 under momentum 0.9 shrinks w ≈ 1/(1 − 0.9) = 10× faster per
  step in steady state than decoupled decay with the same coefficient."""
  cfg = dict(name="sgd", base_lr=0.01, lr_scaling="none", schedule="constant",
             weight_decay=0.01, momentum=0.9)
  zeros = [np.zeros(1)] * 300
  l2 = _two_steps(factory.OptimizerConfig(**cfg), [1.0], zeros)[0]
  dec = _two_steps(factory.OptimizerConfig(**cfg, weight_decay_mode="decoupled"), [1.0],
                   zeros)[0]
  assert dec == pytest.approx((1 - 0.01 * 0.01) ** 300, rel=1e-5)
  assert 8.5 < np.log(l2) / np.log(dec) < 10.5


def test_weight_decay_mode_recipe_resolution_and_errors():
  modes = {n: factory.OptimizerConfig(name=n).weight_decay_mode for n in factory.OPTIMIZERS}
  assert modes == {"sgd": "l2", "lars": "l2", "adamw": "decoupled", "lamb": "decoupled"}
  for name, mode in (("lars", "decoupled"), ("adamw", "l2"), ("lamb", "l2"),
                     ("sgd", "coupled")):
    with pytest.raises(ConfigError, match="OptimizerConfig.weight_decay_mode="):
      factory.OptimizerConfig(name=name, weight_decay_mode=mode)
  cfg = factory.OptimizerConfig(name="sgd", weight_decay_mode="decoupled")
  assert configs.from_dict(factory.OptimizerConfig, configs.to_dict(cfg)) == cfg


def _tiny_model():
  backbone = ResNetV2("tiny", num_classes=3).build_for(32)
  head = ProjectionHead(num_layers=3, hidden_dim=16, output_dim=8)
  head(keras.ops.zeros((2, backbone.output_channels)))
  classifier = ClassificationHead(2)
  classifier(keras.ops.zeros((2, 8)))
  return backbone, head, classifier


def test_norm_and_bias_variables_picks_exactly_norm_params_and_biases():
  backbone, head, classifier = _tiny_model()
  chosen = factory.norm_and_bias_variables([backbone, head, classifier])
  everything = backbone.weights + head.weights + classifier.weights
  # Independent check by variable name (fine in a test: names are gamma/beta/bias here).
  expected = [v for v in everything if v.name in ("gamma", "beta", "bias")]
  assert len({id(v) for v in chosen}) == len(chosen)
  assert {id(v) for v in chosen} == {id(v) for v in expected}
  assert all(v.trainable for v in chosen)
  # Structure: 4 units x 3 GNs + final GN per backbone; BN betas only where center=True.
  gn_layers = [l for l in backbone._flatten_layers() if isinstance(
      l, keras.layers.GroupNormalization)]
  assert len(gn_layers) == 13
  n_bn = len(head.bn_layers)
  assert len(chosen) == 2 * len(gn_layers) + 1 + (2 * n_bn - 1) + 1
  # Kernels and BN moving statistics are never chosen.
  assert not any(v.name in ("kernel", "moving_mean", "moving_variance") for v in chosen)
  assert {id(v) for v in factory.norm_and_bias_variables(backbone)} <= {id(v) for v in chosen}


def test_lars_factory_exclusions_on_a_real_model():
  backbone, head, _ = _tiny_model()
  variables = backbone.trainable_variables + head.trainable_variables
  excluded = factory.norm_and_bias_variables([backbone, head])
  opt = factory.build_optimizer(factory.OptimizerConfig(warmup_steps=1, total_steps=10), 64,
                                variables=variables, exclude=excluded)
  excluded_ids = {id(v) for v in excluded}
  for v in variables:
    flags = exclusion_flags(opt, v)
    assert flags == ((False, False) if id(v) in excluded_ids else (True, True)), v.path


@pytest.mark.parametrize("name", ["lars", "sgd"])  # sgd: the L2 subclass
def test_build_under_mirrored_strategy_then_restore(tmp_path, name):
  strategy = strategy_lib.make_strategy("mirrored", num_cpu_devices=2)
  cfg = factory.OptimizerConfig(name=name, warmup_steps=1, total_steps=10, weight_decay=1e-2)

  def make():
    with strategy.scope():
      model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                                keras.layers.BatchNormalization()])
      opt = factory.build_optimizer(cfg, 8, variables=model.trainable_variables,
                                    exclude=factory.norm_and_bias_variables(model))
    return model, opt

  model, opt = make()
  x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)

  @tf.function
  def step(model, opt, batch):
    def replica_fn(batch):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(batch, training=True))) / 2.0
      opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                              model.trainable_variables))
    strategy.run(replica_fn, args=(batch,))

  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(x))
  batch = next(iter(dataset))
  step(model, opt, batch)
  prefix = tf.train.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "ckpt"))
  model2, opt2 = make()
  tf.train.Checkpoint(model=model2, optimizer=opt2).read(prefix).assert_consumed()
  step(model, opt, batch)
  tf.function(step.python_function)(model2, opt2, batch)
  for a, b in zip(model.weights, model2.weights):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)
