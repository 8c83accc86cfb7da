"""Jobs side by side in worker processes: results in job order, errors carried back, stop
signals forwarded, and a parallel sweep that gives the same numbers as one at a time."""

import json
import os
import signal
import threading
import time

import pytest

from remedis_tf.errors import ConfigError, TrainingError
from remedis_tf.runs import parallel, sweep
from tests.eval.tiny_data import brightness_set
from tests.runs.test_sweep import _template

# Tolerances: none. The parallel and the one-at-a-time sweep run the same kernels with the
# same thread pools on one machine, so their numbers are compared exactly (docs/testing.md:
# bit-for-bit only between runs on one machine).


def _square_and_pid(x):
  return x * x, os.getpid()


def _reject_two(x):
  if x == 2:
    raise ConfigError("must not be 2", field="x", value=x)
  return x


def _exit_hard(x):
  os._exit(3)  # pylint: disable=protected-access


def _wait_for_stop(job):
  """Marks itself started, then waits (up to 60 s) for a stop request."""
  folder, name = job
  if parallel.stop_requested():
    return name, "not started"
  open(os.path.join(folder, f"started_{name}"), "w").close()
  deadline = time.time() + 60
  while time.time() < deadline and not parallel.stop_requested():
    time.sleep(0.05)
  return name, "stopped" if parallel.stop_requested() else "timed out"


def test_jobs_run_in_worker_processes_in_job_order():
  lines = []
  results = parallel.run_jobs(_square_and_pid, [1, 2, 3, 4], workers=2, log=lines.append)
  assert [r for r, _ in results] == [1, 4, 9, 16]
  pids = {pid for _, pid in results}
  assert os.getpid() not in pids and 1 <= len(pids) <= 2
  assert lines == ["[parallel] 4 jobs in 2 worker processes"]
  # One worker (or one job): in this process, nothing spawned.
  assert parallel.run_jobs(_square_and_pid, [3], workers=2) == [(9, os.getpid())]
  assert parallel.run_jobs(_square_and_pid, [1, 2], workers=1) == [(1, os.getpid()),
                                                                     (4, os.getpid())]


def test_a_job_error_comes_back_with_its_type_and_field():
  with pytest.raises(ConfigError) as e:
    parallel.run_jobs(_reject_two, [1, 2, 3], workers=2, log=lambda _: None)
  assert e.value.field == "x" and str(e.value) == "x=2: must not be 2"


def test_a_worker_that_dies_is_reported_not_waited_for():
  with pytest.raises(TrainingError, match="ended without a result"):
    parallel.run_jobs(_exit_hard, [1, 2], workers=2, log=lambda _: None)


def test_a_stop_signal_reaches_running_jobs_and_later_jobs_do_not_start(tmp_path):
  folder = str(tmp_path)
  jobs = [(folder, "a"), (folder, "b"), (folder, "c")]

  def stop_when_two_started():
    deadline = time.time() + 120
    while time.time() < deadline:
      if sum(n.startswith("started_") for n in os.listdir(folder)) >= 2:
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.05)

  before = signal.getsignal(signal.SIGTERM)
  killer = threading.Thread(target=stop_when_two_started, daemon=True)
  killer.start()
  results = parallel.run_jobs(_wait_for_stop, jobs, workers=2, log=lambda _: None)
  killer.join()
  outcomes = sorted(outcome for _, outcome in results)
  # The two running jobs saw the stop; the third, queued behind them, never started.
  assert outcomes == ["not started", "stopped", "stopped"]
  assert signal.getsignal(signal.SIGTERM) is before  # this process' handler is back


def test_a_parallel_sweep_gives_the_numbers_of_one_at_a_time(tmp_path):
  root = str(tmp_path)
  train, _ = brightness_set(root, "train", 12, seed=0)
  test, _ = brightness_set(root, "test", 6, seed=1)
  val, _ = brightness_set(root, "val", 6, seed=2)
  models = {"baseline": "", "remedis": ""}
  found = {}
  for workers in (1, 2):
    out = os.path.join(root, f"sweep_w{workers}")
    # Two (model, fraction) groups, one per worker; each trains its first seed at both
    # learning rates and its second at the one chosen (read back from the shared store).
    result = sweep.run_data_efficiency(train, test, models, [1.0], [0, 1],
                                       _template(steps=2), out, num_bootstrap=10,
                                       log=lambda _: None, validation=val,
                                       lr_grid=(0.05, 0.1), lr_seed_sharing=True,
                                       workers=workers)
    assert len(result.computed) == 4 and not result.interrupted
    cells = json.load(open(os.path.join(out, sweep.RESULTS_FILE)))["cells"]
    found[workers] = {(c["model"], c["fraction"], c["seed"]):
                      (c["result"]["metric"]["value"], c["result"]["val_value"],
                       c["result"]["lr"]) for c in cells}
  assert len(found[2]) == 4  # no cell lost by workers adding to one result store
  assert found[1] == found[2]
