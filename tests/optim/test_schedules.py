"""Tests for remedis_tf.optim.schedules against hand-computed values."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.errors import ConfigError
from remedis_tf.optim import schedules

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# schedules evaluated by TensorFlow in float32 against exact python values: warmup and
# cosine are a few float32 operations (within a few u ~ 3e-7 relative), so rel 1e-6..1e-5,
# abs 1e-7 at the exact zeros, and pytest.approx's default (rel 1e-6) hold; the BiT-
# HyperRule values are python floats (rtol 1e-9: float64 products of decimals).
# Measured: every assert_allclose here used <= 0.011 of its tolerance (>= 90x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0, +1, +2]
# (AMD EPYC AVX2, 2026-12-03, 8 comparisons).


def test_scaled_learning_rate_rules():
  assert schedules.scaled_learning_rate(0.3, 512, "linear") == pytest.approx(0.6)
  assert schedules.scaled_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
  assert schedules.scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
  assert schedules.scaled_learning_rate(0.1, 100, "sqrt") == pytest.approx(1.0)
  assert schedules.scaled_learning_rate(0.3, 512, "none") == pytest.approx(0.3)
  assert schedules.scaled_learning_rate(0.003, 128, "linear", 512) == pytest.approx(0.00075)
  with pytest.raises(ConfigError, match="sqrt"):
    schedules.scaled_learning_rate(0.3, 512, "cubic")
  with pytest.raises(ConfigError, match="batch"):
    schedules.scaled_learning_rate(0.3, 0)


def _lr(schedule, step):
  return float(schedule(tf.constant(step, tf.int64)).numpy())


def test_warmup_cosine_values():
  peak, warmup, total = 1.2, 100, 1100
  schedule = schedules.WarmupCosine(peak, warmup, total)
  assert _lr(schedule, 0) == 0.0
  assert _lr(schedule, 50) == pytest.approx(0.6, rel=1e-6)      # mid-warmup
  assert _lr(schedule, 100) == pytest.approx(1.2, rel=1e-6)     # warmup end = peak
  assert _lr(schedule, 600) == pytest.approx(0.6, rel=1e-5)     # half way through cosine
  assert _lr(schedule, 350) == pytest.approx(
      1.2 * 0.5 * (1 + math.cos(math.pi * 0.25)), rel=1e-5)
  assert _lr(schedule, 1100) == pytest.approx(0.0, abs=1e-7)    # end
  assert _lr(schedule, 5000) == pytest.approx(0.0, abs=1e-7)    # past the end stays 0
  # Steps as Python ints and float tensors work too (Keras passes iterations).
  assert float(schedule(50)) == pytest.approx(0.6, rel=1e-6)


def test_warmup_cosine_without_warmup_and_serialisation():
  schedule = schedules.WarmupCosine(0.5, 0, 10)
  assert _lr(schedule, 0) == pytest.approx(0.5)
  assert _lr(schedule, 5) == pytest.approx(0.25, rel=1e-5)
  config = schedule.get_config()
  clone = schedules.WarmupCosine.from_config(config)
  assert clone.get_config() == config
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
      schedules.WarmupCosine(2.0, 3, 9)))
  assert isinstance(restored, schedules.WarmupCosine)
  assert _lr(restored, 1) == pytest.approx(2.0 / 3, rel=1e-6)
  with pytest.raises(ConfigError, match="warmup_steps"):
    schedules.WarmupCosine(1.0, 20, 10)


def test_warmup_cosine_drives_an_optimizer():
  opt = keras.optimizers.SGD(schedules.WarmupCosine(1.0, 4, 8))
  var = keras.Variable(np.zeros(1, np.float32))
  moves = []
  for _ in range(6):
    before = float(np.asarray(var)[0])
    opt.apply_gradients([(tf.constant([-1.0]), var)])
    moves.append(float(np.asarray(var)[0]) - before)
  np.testing.assert_allclose(moves, [0.0, 0.25, 0.5, 0.75, 1.0,
                                     0.5 * (1 + math.cos(math.pi / 4))], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("size, steps, mixup", [
    (10_000, [100, 200, 300, 400, 500], 0.0),
    (19_999, [100, 200, 300, 400, 500], 0.0),
    (20_000, [500, 3000, 6000, 9000, 10000], 0.1),
    (100_000, [500, 3000, 6000, 9000, 10000], 0.1),
    (499_999, [500, 3000, 6000, 9000, 10000], 0.1),
    (1_000_000, [500, 6000, 12000, 18000, 20000], 0.1),
])
def test_bit_hyperrule_steps_and_mixup(size, steps, mixup):
  rule = schedules.bit_hyperrule(size, 512)
  assert rule["steps"] == steps
  assert rule["warmup_steps"] == steps[0] and rule["total_steps"] == steps[-1]
  assert rule["mixup_alpha"] == mixup


def test_bit_hyperrule_lr_and_resolution():
  rule = schedules.bit_hyperrule(100_000, 128, base_lr=0.003, image_size=(64, 64))
  assert rule["peak_lr"] == pytest.approx(0.00075)
  np.testing.assert_allclose(rule["lr_values"], [7.5e-4, 7.5e-5, 7.5e-6, 7.5e-7], rtol=1e-9)
  assert (rule["resize"], rule["crop"]) == (160, 128)
  assert schedules.bit_hyperrule(10, 512, image_size=95)["resize"] == 160
  big = schedules.bit_hyperrule(10, 512, image_size=96)
  assert (big["resize"], big["crop"]) == (512, 480)
  # BiT decides on area: a 64x200 image is "large".
  assert schedules.bit_hyperrule(10, 512, image_size=(64, 200))["crop"] == 480
  assert schedules.bit_hyperrule(10, 512)["resize"] is None
  with pytest.raises(ConfigError, match="dataset size"):
    schedules.bit_hyperrule(0, 512)


def test_bit_hyperrule_schedule_values():
  schedule = schedules.BiTHyperRuleSchedule(0.01, [100, 200, 300, 400, 500])
  expected = {0: 0.0, 50: 0.005, 99: 0.0099, 100: 0.01, 199: 0.01, 200: 0.001, 250: 0.001,
              300: 1e-4, 399: 1e-4, 400: 1e-5, 499: 1e-5, 500: 1e-5, 900: 1e-5}
  for step, value in expected.items():
    assert _lr(schedule, step) == pytest.approx(value, rel=1e-5, abs=1e-12), step
  clone = schedules.BiTHyperRuleSchedule.from_config(schedule.get_config())
  assert _lr(clone, 250) == pytest.approx(0.001, rel=1e-5)
  with pytest.raises(ConfigError, match="increasing"):
    schedules.BiTHyperRuleSchedule(0.01, [100, 100, 300])


def test_scale_steps():
  assert schedules.scale_steps([500, 3000, 6000, 9000, 10000], 0.01) == [5, 30, 60, 90, 100]
  assert schedules.scale_steps([100, 200, 300, 400, 500], 0.1) == [10, 20, 30, 40, 50]
  # Collisions after rounding are bumped so boundaries stay strictly increasing.
  assert schedules.scale_steps([100, 200, 300, 400, 500], 0.001) == [1, 2, 3, 4, 5]
  assert schedules.scale_steps([10, 20], 2.0) == [20, 40]
  with pytest.raises(ConfigError, match="factor"):
    schedules.scale_steps([1, 2], 0)
