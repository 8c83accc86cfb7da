"""The shared custom loop: resume exactness, NaN guard, config checks, SIGTERM, replicas."""

import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.errors import ConfigError, TrainingError
from remedis_tf.train import loop as loop_lib
from remedis_tf.train import strategy as strategy_lib

GLOBAL_BATCH = 8
DIM = 4


def _position_batch(start_step, input_context):
  """Deterministic stream: example at global position p is x_p = sin(p * [1..DIM])."""
  pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  per = input_context.get_per_replica_batch_size(GLOBAL_BATCH) if input_context else GLOBAL_BATCH
  positions = tf.data.Dataset.range(start_step * GLOBAL_BATCH, 10**9)
  positions = positions.shard(pipelines, pipeline_id)

  def make(p):
    x = tf.sin(tf.cast(p, tf.float32) * tf.range(1.0, DIM + 1.0))
    y = tf.reduce_sum(x * tf.constant([0.5, -1.0, 2.0, 0.25])) + 0.1
    return {"x": x, "y": y[None]}

  return positions.map(make).batch(per, drop_remainder=True)


class RegressionTask:
  """A linear-regression task obeying the loop's Task protocol."""

  metric_names = ("loss", "abs_error")
  global_batch_size = GLOBAL_BATCH

  def __init__(self, lr=0.05, poison_at=None):
    self.lr = lr
    self.poison_at = poison_at
    self.initialized = False

  def build(self, strategy):
    keras.utils.set_random_seed(0)
    self.model = keras.Sequential([keras.Input((DIM,)), keras.layers.Dense(1)])
    self.optimizer = keras.optimizers.SGD(self.lr, momentum=0.9)
    self.optimizer.build(self.model.trainable_variables)

  def checkpoint_items(self):
    return {"backbone": self.model, "optimizer": self.optimizer}

  def initialize(self):
    self.initialized = True
    return ["random"]

  def dataset_fn(self, input_context, start_step):
    return _position_batch(start_step, input_context)

  def train_step(self, batch, step):
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    with tf.GradientTape() as tape:
      err = self.model(batch["x"]) - batch["y"]
      per_example = tf.reduce_sum(tf.square(err), axis=1)
      if self.poison_at is not None:
        scale = tf.where(step >= self.poison_at, tf.constant(np.inf), tf.constant(1.0))
        per_example = per_example * scale
      loss = tf.reduce_sum(per_example) / GLOBAL_BATCH
    grads = tape.gradient(loss, self.model.trainable_variables)
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    return {"loss": loss * replicas, "abs_error": tf.reduce_mean(tf.abs(err))}

  def extra_summaries(self):
    return {"learning_rate": self.lr}

  def summarize_inputs(self):
    pass


def _weights(task):
  return [np.array(v) for v in task.model.weights]


def _config(run_dir, **kw):
  base = dict(run_dir=str(run_dir), total_steps=12, steps_per_loop=2, checkpoint_every=4,
              summary_every=4, log_every=4)
  base.update(kw)
  return loop_lib.LoopConfig(**base)


def test_loss_decreases_and_writes_outputs(tmp_path):
  task = RegressionTask()
  lines = []
  result = loop_lib.run_loop(task, tf.distribute.get_strategy(), _config(tmp_path, total_steps=40),
                             run_config={"stage": "test"}, log=lines.append)
  assert result.final_step == 40
  assert result.history[-1]["loss"] < result.history[0]["loss"] * 0.5
  assert os.path.exists(tmp_path / "config.json")
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-40")
  assert any("img/s" in l and "ETA" in l for l in lines)
  assert tf.io.gfile.glob(str(tmp_path / "train" / "events.out.tfevents.*"))


class _Interrupt(Exception):
  pass


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
  reference = RegressionTask()
  loop_lib.run_loop(reference, tf.distribute.get_strategy(), _config(tmp_path / "ref"))

  def crash_at_6(step, metrics):
    if step == 6:
      raise _Interrupt()

  first = RegressionTask()
  with pytest.raises(_Interrupt):
    loop_lib.run_loop(first, tf.distribute.get_strategy(), _config(tmp_path / "run"),
                      after_steps=crash_at_6)
  resumed = RegressionTask()
  lines = []
  result = loop_lib.run_loop(resumed, tf.distribute.get_strategy(), _config(tmp_path / "run"),
                             log=lines.append)
  assert result.resumed_from == 4  # last checkpoint before the crash
  assert not resumed.initialized  # resume wins over init
  assert any("[resume]" in l for l in lines)
  for a, b in zip(_weights(reference), _weights(resumed)):
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  task = RegressionTask(poison_at=6)
  with pytest.raises(TrainingError, match="non-finite loss.*steps 7-8"):
    loop_lib.run_loop(task, tf.distribute.get_strategy(), _config(tmp_path))
  latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
  assert latest.endswith("ckpt-4")
  reader = tf.train.load_checkpoint(latest)
  for key in reader.get_variable_to_shape_map():
    value = reader.get_tensor(key)
    if np.issubdtype(np.asarray(value).dtype, np.floating):
      assert np.all(np.isfinite(value)), key


def test_refuses_run_dir_of_a_different_config(tmp_path):
  loop_lib.run_loop(RegressionTask(), tf.distribute.get_strategy(), _config(tmp_path, total_steps=2),
                    run_config={"optimizer": {"learning_rate": 0.05}, "loop": {"total_steps": 2}})
  with pytest.raises(ConfigError, match=r"optimizer.learning_rate: run dir has 0.05, now 0.1"):
    loop_lib.run_loop(RegressionTask(), tf.distribute.get_strategy(),
                      _config(tmp_path, total_steps=4),
                      run_config={"optimizer": {"learning_rate": 0.1}, "loop": {"total_steps": 4}})
  # A longer run with the same settings is a legitimate continuation.
  result = loop_lib.run_loop(RegressionTask(), tf.distribute.get_strategy(),
                             _config(tmp_path, total_steps=4),
                             run_config={"optimizer": {"learning_rate": 0.05},
                                         "loop": {"total_steps": 4}})
  assert result.final_step == 4 and result.resumed_from == 2


def test_sigterm_saves_and_stops_cleanly(tmp_path):
  def send_sigterm(step, metrics):
    if step == 6:
      os.kill(os.getpid(), signal.SIGTERM)

  result = loop_lib.run_loop(RegressionTask(), tf.distribute.get_strategy(), _config(tmp_path),
                             after_steps=send_sigterm, log=lambda s: None)
  assert result.preempted and result.final_step == 6
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-6")
  reference = RegressionTask()
  loop_lib.run_loop(reference, tf.distribute.get_strategy(), _config(tmp_path / "ref"))
  resumed = RegressionTask()
  result = loop_lib.run_loop(resumed, tf.distribute.get_strategy(), _config(tmp_path))
  assert result.resumed_from == 6
  for a, b in zip(_weights(reference), _weights(resumed)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.numerics
def test_two_replicas_match_one_replica(tmp_path):
  single = RegressionTask()
  loop_lib.run_loop(single, tf.distribute.get_strategy(), _config(tmp_path / "one"))
  mirrored = strategy_lib.make_strategy("mirrored", num_cpu_devices=2)
  assert mirrored.num_replicas_in_sync == 2
  double = RegressionTask()
  loop_lib.run_loop(double, mirrored, _config(tmp_path / "two"))
  # Mirrored vs one device: the all-reduce sums the replicas' gradients in another order
  # (float32, a small regression model). Measured across numerics-matrix rows in the
  # comparison below; see docs/testing.md.
  for a, b in zip(_weights(single), _weights(double)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_loop_config_validation():
  with pytest.raises(ConfigError, match="total_steps"):
    loop_lib.LoopConfig(run_dir="x", total_steps=0)
  with pytest.raises(ConfigError, match="summary_every must be >= 0"):
    loop_lib.LoopConfig(run_dir="x", total_steps=10, summary_every=-1)


def test_default_summary_interval_scales_with_the_run(tmp_path):
  # About 20 points for a short run, every 50 steps from 1000 steps on, never more often
  # than one host-loop call (steps_per_loop); an explicit interval wins.
  def interval(steps, **kw):
    return loop_lib.LoopConfig("x", steps, **kw).summary_interval

  assert [interval(n) for n in (1, 12, 40, 400, 999, 1000, 100000)] == [1, 1, 2, 20, 49, 50, 50]
  assert [interval(n, steps_per_loop=4) for n in (12, 40, 400)] == [4, 4, 20]
  assert interval(12, summary_every=5) == 5
  # A 12-step run with the default and 4 steps per call writes a summary after every call
  # (it had one, at the end).
  loop_lib.run_loop(RegressionTask(), tf.distribute.get_strategy(),
                    loop_lib.LoopConfig(str(tmp_path), 12, steps_per_loop=4,
                                        checkpoint_every=12),
                    run_config={"stage": "test"}, log=lambda _: None)
  steps = set()
  for path in tf.io.gfile.glob(str(tmp_path / "train" / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      if any(v.tag == "loss" for v in event.summary.value):
        steps.add(event.step)
  assert steps == {4, 8, 12}
