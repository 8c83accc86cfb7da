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


@pytest.fixture(autouse=True)
def _float32_policy_after_each_test():
  """A run with ``precision=bfloat16`` sets Keras' global dtype policy (as a training run
  must); a later test that builds a model directly would then get a bfloat16 model and
  compare it with float32 tolerances. Every test starts from float32."""
  yield
  import keras  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy("float32")


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


# The longest modules of the suite (from `pytest --durations`), longest first. Under
# pytest-xdist (`--dist loadscope`, one module per worker at a time) they are sent out
# first, so no worker is left running a five-minute module after the other has finished.
# A stale or missing name only costs balance, never a test.
_LONG_MODULES = (
    "tests/experiments/test_demo.py",
    "tests/reliability/test_bad_inputs.py",
    "tests/experiments/test_eval_binaries.py",
    "tests/train/test_xla.py",
    "tests/weights/test_keras_hub_models.py",
    "tests/train/test_multi_worker.py",
    "tests/train/test_preemption.py",
    "tests/runs/test_evaluate.py",
    "tests/experiments/test_convert_weights.py",
    "tests/experiments/test_helpfull.py",
    "tests/train/test_run_dir_lock.py",
    "tests/runs/test_sweep.py",
    "tests/benchmarks/test_benchmarks_quick.py",
    "tests/runs/test_evaluate_reviewers.py",
    "tests/runs/test_embed.py",
    "tests/test_public_api.py",
)


def pytest_collection_modifyitems(config, items):
  """Moves the long modules to the front, keeping every module's own test order."""
  del config
  rank = {name: i for i, name in enumerate(_LONG_MODULES)}
  def key(item):
    path = os.path.relpath(str(item.path), os.path.dirname(os.path.dirname(__file__)))
    return rank.get(path.replace(os.sep, "/"), len(rank))
  items.sort(key=key)  # stable: ties keep collection order
