"""run_loop's run-directory lock and its retries of remote writes, in-process.

Remote storage is simulated by TF's in-memory ``ram://`` file system, registered as remote
for these tests (so the heartbeat lock and the retries apply), with failures injected
into CheckpointManager.save and the summary writer's flush.
"""

import dataclasses
import json
import os
import signal
import threading
import time
import uuid

import pytest
import tensorflow as tf

from remedis_tf import configs, io_utils, remote_io, run_lock
from remedis_tf.errors import RunDirLockedError, StorageError
from remedis_tf.train import loop as loop_lib
from test_preemption import BallastTask

# Tolerances here (docs/testing.md):
# derived: a float written to and read from JSON is exact (approx default).

FAST_RETRY = remote_io.RetryPolicy(attempts=3, initial_delay_s=0.001, max_delay_s=0.002)
UNAVAILABLE = tf.errors.UnavailableError(None, None, "HTTP response code 503 with body "
                                         "'Backend Error' when uploading")


def _config(run_dir, **kwargs):
  return loop_lib.LoopConfig(run_dir=str(run_dir), total_steps=6, steps_per_loop=2,
                             checkpoint_every=2, log_every=2, summary_every=2, **kwargs)


def _run(config, lines=None, **kwargs):
  return loop_lib.run_loop(BallastTask(ballast_floats=1), tf.distribute.get_strategy(), config,
                           log=(lines.append if lines is not None else lambda line: None),
                           retry=FAST_RETRY, **kwargs)


def test_locked_run_dir_is_refused_and_nothing_is_written(tmp_path):
  run_dir = tmp_path / "run"
  with run_lock.RunLock(str(run_dir)):
    with pytest.raises(RunDirLockedError, match=f"is in use by pid {os.getpid()} on host "):
      _run(_config(run_dir), run_config={"stage": "test", "loop": _config(run_dir)})
    assert os.listdir(run_dir) == [run_lock.LOCK_FILE]  # no config.json, checkpoints, train/
  result = _run(_config(run_dir))
  assert result.final_step == 6


def test_lock_is_released_after_a_clean_run_and_after_sigterm(tmp_path):
  run_dir = tmp_path / "run"

  def sigterm_at_step_2(step, metrics):
    del metrics
    if step == 2:
      assert (run_dir / run_lock.LOCK_FILE).exists()  # held while training
      os.kill(os.getpid(), signal.SIGTERM)

  result = _run(_config(run_dir), after_steps=sigterm_at_step_2)
  assert result.preempted and result.final_step == 2
  assert not (run_dir / run_lock.LOCK_FILE).exists()
  result = _run(_config(run_dir))
  assert result.resumed_from == 2 and result.final_step == 6
  assert not (run_dir / run_lock.LOCK_FILE).exists()


@pytest.fixture
def remote_dir(monkeypatch):
  """A fresh ``ram://`` directory that remote_io treats like gs://."""
  monkeypatch.setattr(remote_io, "REMOTE_SCHEMES", ("gs://", "ram://"))
  path = f"ram://run-{uuid.uuid4().hex[:8]}"
  yield path
  try:
    tf.io.gfile.rmtree(path)
  except tf.errors.NotFoundError:
    pass


def test_holder_that_loses_the_lock_stops_without_saving(remote_dir):
  lock_path = os.path.join(remote_dir, run_lock.LOCK_FILE)

  def take_over_at_step_2(step, metrics):
    del metrics
    if step != 2:
      return
    rival = {"token": "r" * 32, "host": "rival-host", "pid": 99, "started": 1.0,
             "heartbeat": 2.0, "heartbeat_every_s": 1.0}
    io_utils.atomic_write_json(lock_path, rival)
    deadline = time.time() + 10
    # The heartbeat thread (every 0.05 s) sees the foreign token and ends. A beat already
    # past its read-back can still overwrite the rival's file once (read, then write is
    # not atomic); a live rival beats too, so it writes its lock again, as here.
    while any(t.name == "run-lock-heartbeat" for t in threading.enumerate()):
      assert time.time() < deadline, "the takeover was not noticed within 10 s"
      with tf.io.gfile.GFile(lock_path) as f:
        if json.load(f).get("token") != rival["token"]:
          io_utils.atomic_write_json(lock_path, rival)
      time.sleep(0.02)

  with pytest.raises(RunDirLockedError, match="taken over by pid 99 on host rival-host"):
    _run(_config(remote_dir, lock_timeout_s=0.5), after_steps=take_over_at_step_2)
  assert tf.train.latest_checkpoint(os.path.join(remote_dir, "checkpoints")).endswith("ckpt-2")
  with tf.io.gfile.GFile(lock_path) as f:
    assert json.load(f)["token"] == "r" * 32  # the rival's lock is left in place


def test_remote_lock_is_heartbeat_protocol_and_released(remote_dir):
  seen = {}

  def peek(step, metrics):
    del metrics
    with tf.io.gfile.GFile(os.path.join(remote_dir, run_lock.LOCK_FILE)) as f:
      seen[step] = json.load(f)

  _run(_config(remote_dir, lock_timeout_s=0.5), after_steps=peek)
  assert sorted(seen) == [2, 4, 6] and seen[2]["pid"] == os.getpid()
  assert seen[2]["heartbeat_every_s"] == pytest.approx(0.05)
  assert not tf.io.gfile.exists(os.path.join(remote_dir, run_lock.LOCK_FILE))


def _failing_saves(monkeypatch, fail_steps, times):
  """CheckpointManager.save raises UNAVAILABLE ``times`` times for each step in fail_steps."""
  original = tf.train.CheckpointManager.save
  failures = {}

  def save(self, checkpoint_number=None, **kwargs):
    if checkpoint_number in fail_steps and failures.get(checkpoint_number, 0) < times:
      failures[checkpoint_number] = failures.get(checkpoint_number, 0) + 1
      raise UNAVAILABLE
    return original(self, checkpoint_number=checkpoint_number, **kwargs)

  monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
  return failures


def test_transient_save_failures_are_retried(remote_dir, monkeypatch):
  failures = _failing_saves(monkeypatch, {4}, times=2)
  lines = []
  result = _run(_config(remote_dir), lines)
  assert result.final_step == 6 and failures == {4: 2}
  retries = [l for l in lines if l.startswith("[storage] checkpoint save to")]
  assert len(retries) == 2 and "retry 2/3" in retries[0] and "retry 3/3" in retries[1]
  assert tf.train.latest_checkpoint(os.path.join(remote_dir, "checkpoints")).endswith("ckpt-6")


def test_persistent_save_failure_stops_resumably(remote_dir, monkeypatch):
  _failing_saves(monkeypatch, {4}, times=99)
  with pytest.raises(StorageError) as e:
    _run(_config(remote_dir))
  message = str(e.value)
  assert "after 3 attempts" in message and "stopped at step 4" in message, message
  assert f"last complete checkpoint {remote_dir}/checkpoints/ckpt-2 is kept" in message
  assert not tf.io.gfile.exists(os.path.join(remote_dir, run_lock.LOCK_FILE))
  monkeypatch.undo()
  monkeypatch.setattr(remote_io, "REMOTE_SCHEMES", ("gs://", "ram://"))
  result = _run(_config(remote_dir))
  assert result.resumed_from == 2 and result.final_step == 6


def test_persistent_summary_failure_saves_a_checkpoint_then_stops(remote_dir, monkeypatch,
                                                                 tmp_path):
  writer_type = type(tf.summary.create_file_writer(str(tmp_path)))
  original = writer_type.flush
  calls = {"n": 0}

  def flush(self):
    calls["n"] += 1
    if calls["n"] >= 3:  # input summaries and step 2 work; step 4 keeps failing
      raise UNAVAILABLE
    return original(self)

  monkeypatch.setattr(writer_type, "flush", flush)
  with pytest.raises(StorageError, match=r"TensorBoard summaries .* after 3 attempts .*"
                                         r"checkpoint \S+ckpt-4 holds step 4"):
    _run(_config(remote_dir))
  assert tf.train.latest_checkpoint(os.path.join(remote_dir, "checkpoints")).endswith("ckpt-4")


def test_lock_settings_may_change_on_resume(tmp_path):
  config = _config(tmp_path)
  configs.write_run_config(config.run_dir, loop=config)
  changed = dataclasses.replace(config, lock_timeout_s=30.0, steal_lock=True)
  loop_lib.check_run_config(config.run_dir, {"loop": changed})  # no ConfigError

class RemoteDataTask(BallastTask):
  """BallastTask whose input pipeline hits a Cloud Storage outage at example 24 (step 4)."""

  def dataset_fn(self, input_context, start_step):
    def read(position):
      if position >= 24:
        raise tf.errors.UnavailableError(None, None, "HTTP response code 503 with body "
                                         "'Backend Error' when reading gs://b/img/24.png")
      return position

    positions = super().dataset_fn(input_context, start_step).unbatch()
    index = tf.data.Dataset.range(start_step * 8, 10**9)
    return tf.data.Dataset.zip(positions, index).map(
        lambda example, i: (example, tf.py_function(read, [i], tf.int64))).map(
            lambda example, _: example).batch(8, drop_remainder=True)


def test_storage_failure_while_reading_data_names_the_checkpoint(tmp_path):
  with pytest.raises(StorageError) as e:
    loop_lib.run_loop(RemoteDataTask(ballast_floats=1), tf.distribute.get_strategy(),
                      _config(tmp_path / "run"), log=lambda line: None, retry=FAST_RETRY)
  message = str(e.value)
  assert message.startswith("Cloud Storage is unavailable for gs://b/img/24.png"), message
  assert "while training steps 3-4" in message and "ckpt-2 is kept" in message, message
