"""Test-session setup: two logical CPU devices so MirroredStrategy tests run on CPU."""

import os
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
  tf.config.set_logical_device_configuration(
      _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier import
  pass


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_collective_keys():
  """Each MirroredStrategy created in one process must use fresh collective keys, else a
  second strategy's all-reduce can collide with the first one's (tensorflow#62790)."""
  tf.distribute.MirroredStrategy._collective_key_base += 100000  # pylint: disable=protected-access
  yield


def _heartbeat_threads():
  return {t for t in threading.enumerate() if t.name == "run-lock-heartbeat" and t.is_alive()}


@pytest.fixture(autouse=True)
def _no_leaked_run_lock_heartbeat():
  """A test must release every run-directory lock it takes: a heartbeat thread left
  running would keep rewriting a lock file after the test (and confuse later tests that
  wait for their own heartbeat to stop)."""
  before = _heartbeat_threads()
  yield
  deadline = time.time() + 5
  while (_heartbeat_threads() - before) and time.time() < deadline:
    time.sleep(0.05)
  leaked = _heartbeat_threads() - before
  assert not leaked, f"{len(leaked)} run-lock heartbeat thread(s) still running after the test"
