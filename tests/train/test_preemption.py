"""Preemption safety of the real stage-2 binary and of checkpoint saves.

* SIGTERM at a random step: the binary saves, prints "[preempted]" and exits 0; the same
  command resumes at exactly that step. SIGKILL at a random step: the same command
  resumes from the last checkpoint and redoes the steps after it. Both end with the same
  weights as an uninterrupted run (all three runs go concurrently to save time).
* A process killed while it is writing a checkpoint leaves the previous one usable, and
  the loop resumes from it to the same weights as an uninterrupted run.
* A latest checkpoint that cannot be read is skipped for the previous one.
"""

import dataclasses
import os
import random
import re
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf import synthetic
from remedis_tf.errors import CheckpointError
from remedis_tf.train import loop as loop_lib
from subprocess_runs import Run, python

TOTAL_STEPS = 20
CHECKPOINT_EVERY = 3
HARD_TIMEOUT_S = 360  # only guards against hangs


def _binary(data, run_dir):
  return python(
      "-m", "experiments.pretrain_contrastive", "--source=chexpert",
      f"--csv={data}/site_a/unlabelled.csv", f"--data_root={data}", "--label_columns=",
      "--variant=tiny", "--image_size=32", "--batch_size=8", "--learning_rate=0.05",
      f"--train_steps={TOTAL_STEPS}", "--steps_per_loop=1", "--log_every=1",
      "--summary_every=5", f"--checkpoint_every={CHECKPOINT_EVERY}", "--seed=7",
      f"--run_dir={run_dir}")


def _checkpoint_values(run_dir):
  path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  assert path and path.endswith(f"ckpt-{TOTAL_STEPS}"), path
  reader = tf.train.load_checkpoint(path)
  # Backbone weights live under backbone/... and optimizer/_trainable_variables/... (a
  # checkpoint stores each variable once); compare everything but the save counter.
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k != "_CHECKPOINTABLE_OBJECT_GRAPH" and not k.startswith("save_counter")}


def _assert_same_checkpoint(reference_dir, run_dir):
  expected, got = _checkpoint_values(reference_dir), _checkpoint_values(run_dir)
  assert sorted(expected) == sorted(got)
  assert sum(k.startswith("backbone/") for k in expected) >= 3
  # Three runs of one binary on one machine (same kernels, same thread settings): resume is
  # promised bit-exact there (docs/numerics.md), and 1e-6 relative asserts it to far below
  # one update. Never a comparison across machines or against stored numbers.
  for key, value in expected.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def _latest_step(run_dir):
  path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  return int(path.rsplit("-", 1)[1]) if path else 0


def test_sigterm_and_sigkill_at_random_steps_resume_exactly(tmp_path):
  data = str(tmp_path / "data")
  synthetic.generate_benchmark(data, synthetic.SyntheticConfig.quick())
  rng = random.Random(20240611)
  signal_at = {"term": rng.randint(2, 12), "kill": rng.randint(2, 12)}
  dirs = {name: str(tmp_path / name) for name in ("reference", "term", "kill")}
  runs = []
  deadline = time.time() + HARD_TIMEOUT_S
  try:
    for name in ("reference", "term", "kill"):
      runs.append(Run(name, _binary(data, dirs[name])))
    reference, term, kill = runs
    pending = {"term": (term, signal.SIGTERM), "kill": (kill, signal.SIGKILL)}
    while pending:
      for name, (run, sig) in list(pending.items()):
        steps = run.trained_steps()
        assert run.running(), f"{name} ended before the signal:\n{run.output()}"
        if steps and steps[-1] >= signal_at[name]:
          run.popen.send_signal(sig)
          del pending[name]
      assert time.time() < deadline, "runs never reached the signal steps"
      time.sleep(0.02)

    assert term.wait(deadline) == 0, term.output()
    stopped = re.findall(r"\[preempted\] SIGTERM received: checkpoint \S+ holds step (\d+)",
                         term.output())
    assert len(stopped) == 1, term.output()
    term_step = int(stopped[0])
    assert signal_at["term"] <= term_step < TOTAL_STEPS
    assert re.search(rf"\[stopped\] preempted at step {term_step}\b", term.output())
    assert _latest_step(dirs["term"]) == term_step
    assert term.trained_steps() == list(range(1, term_step + 1))

    assert kill.wait(deadline) == -signal.SIGKILL
    killed_after = kill.trained_steps()[-1]
    kill_resume = _latest_step(dirs["kill"])
    assert kill_resume <= killed_after < TOTAL_STEPS

    # Same commands again: resume exactly where the checkpoints are.
    runs.append(Run("term resumed", _binary(data, dirs["term"])))
    runs.append(Run("kill resumed", _binary(data, dirs["kill"])))
    for run, start in ((runs[-2], term_step), (runs[-1], kill_resume)):
      assert run.wait(deadline) == 0, run.output()
      if start:
        assert re.search(rf"\[resume\] restored \S+ckpt-{start} at step {start}\b",
                         run.output()), run.output()
      # No lost or repeated steps.
      assert run.trained_steps() == list(range(start + 1, TOTAL_STEPS + 1)), run.output()
      assert "[finished]" in run.output()

    assert reference.wait(deadline) == 0, reference.output()
    assert reference.trained_steps() == list(range(1, TOTAL_STEPS + 1))
    _assert_same_checkpoint(dirs["reference"], dirs["term"])
    _assert_same_checkpoint(dirs["reference"], dirs["kill"])
  finally:
    for run in runs:
      run.kill()


# --- crash during a checkpoint save ----------------------------------------------------

BALLAST_FLOATS = 32 * 1024 * 1024  # 128 MB: a save takes long enough to be caught midway.

_SAVER = r'''
import sys
sys.path.insert(0, {tests!r})
import numpy as np, tensorflow as tf
from remedis_tf.train import loop as loop_lib
from test_preemption import BallastTask
loop_lib.run_loop(BallastTask(), tf.distribute.get_strategy(),
                  loop_lib.LoopConfig(run_dir={run_dir!r}, total_steps=6, steps_per_loop=2,
                                      checkpoint_every=2, log_every=2, summary_every=6),
                  log=lambda line: print(line, flush=True))
'''


class BallastTask:
  """Linear regression plus a large constant variable that makes checkpoints slow."""

  metric_names = ("loss",)
  global_batch_size = 8

  def __init__(self, ballast_floats=BALLAST_FLOATS):
    self.ballast_floats = ballast_floats

  def build(self, strategy):
    del strategy
    import keras
    keras.utils.set_random_seed(0)
    self.model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    self.optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    self.optimizer.build(self.model.trainable_variables)
    self.ballast = tf.Variable(tf.ones([self.ballast_floats]), trainable=False)

  def checkpoint_items(self):
    return {"backbone": self.model, "optimizer": self.optimizer, "ballast": self.ballast}

  def initialize(self):
    return ["random"]

  def dataset_fn(self, input_context, start_step):
    del input_context
    positions = tf.data.Dataset.range(start_step * 8, 10**9)

    def make(p):
      x = tf.sin(tf.cast(p, tf.float32) * tf.range(1.0, 5.0))
      return {"x": x, "y": tf.reduce_sum(x * [0.5, -1.0, 2.0, 0.25])[None]}

    return positions.map(make).batch(8, drop_remainder=True)

  def train_step(self, batch, step):
    del step
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(self.model(batch["x"]) - batch["y"]))
    grads = tape.gradient(loss, self.model.trainable_variables)
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    return {"loss": loss}

  def extra_summaries(self):
    return {}

  def summarize_inputs(self):
    pass


def _loop_config(run_dir):
  return loop_lib.LoopConfig(run_dir=str(run_dir), total_steps=6, steps_per_loop=2,
                             checkpoint_every=2, log_every=2, summary_every=6)


def test_crash_during_checkpoint_save_keeps_previous_checkpoint(tmp_path):
  run_dir = tmp_path / "run"
  checkpoints = run_dir / "checkpoints"
  script = _SAVER.format(tests=os.path.dirname(os.path.abspath(__file__)),
                         run_dir=str(run_dir))
  deadline = time.time() + 120
  saver = Run("saver", python("-c", script))
  try:
    # Kill the process while TF writes the shards of a checkpoint after ckpt-2 into
    # ckpt-N_temp/ (TF merges and renames them into ckpt-N.* only at the end of a save).
    while True:
      temps = [p for p in checkpoints.glob("ckpt-*_temp") if p.name != "ckpt-2_temp"]
      if temps:
        break
      assert saver.running(), f"saves finished before one was interrupted:\n{saver.output()}"
      assert time.time() < deadline, saver.output()
      time.sleep(0.001)
    os.killpg(saver.popen.pid, signal.SIGKILL)
    assert saver.wait(deadline) == -signal.SIGKILL
  finally:
    saver.kill()
  interrupted = int(temps[0].name[len("ckpt-"):-len("_temp")])
  previous = interrupted - 2
  assert not (checkpoints / f"ckpt-{interrupted}.index").exists()
  assert tf.train.latest_checkpoint(str(checkpoints)).endswith(f"ckpt-{previous}")

  lines = []
  resumed = BallastTask()
  result = loop_lib.run_loop(resumed, tf.distribute.get_strategy(), _loop_config(run_dir),
                             log=lines.append)
  assert result.resumed_from == previous and result.final_step == 6, lines
  assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-6")
  reference = BallastTask()
  loop_lib.run_loop(reference, tf.distribute.get_strategy(), _loop_config(tmp_path / "ref"))
  for a, b in zip(reference.model.weights, resumed.model.weights):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unreadable_latest_checkpoint_falls_back_to_previous(tmp_path):
  config = _loop_config(tmp_path)
  loop_lib.run_loop(BallastTask(ballast_floats=1), tf.distribute.get_strategy(),
                    dataclasses.replace(config, total_steps=4))
  checkpoints = tmp_path / "checkpoints"
  data_files = list(checkpoints.glob("ckpt-4.data-*"))
  assert data_files
  for path in data_files:  # damage beyond TF's control (e.g. a disk error)
    path.write_bytes(b"")
  lines = []
  result = loop_lib.run_loop(BallastTask(ballast_floats=1), tf.distribute.get_strategy(), config,
                             log=lines.append)
  assert result.resumed_from == 2 and result.final_step == 6
  assert any("cannot read" in line and "ckpt-4" in line for line in lines), lines

  for path in checkpoints.glob("ckpt-*.index"):
    path.unlink()
  with pytest.raises(CheckpointError, match="no readable checkpoint in .*checkpoints"):
    loop_lib.run_loop(BallastTask(ballast_floats=1), tf.distribute.get_strategy(), config, log=lines.append)
