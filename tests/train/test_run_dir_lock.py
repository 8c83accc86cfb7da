"""One writer per run directory, with the real stage-2 binary.

While a run trains, the same command on the same --run_dir stops at once with one error
line naming the holder (pid, host, since when) and exit 2, without starting to train or
rewriting config.json. After the holder is SIGKILLed, its lock file is still there, and
the same command resumes from the last checkpoint and finishes.
(The lock logic itself is tested in-process in tests/test_run_lock.py.)
"""

import os
import re
import signal
import time

from remedis_tf import run_lock, synthetic
from subprocess_runs import Run
from test_preemption import _binary, _latest_step

HARD_TIMEOUT_S = 300  # only guards against hangs


def _command(data, run_dir, steps):
  """test_preemption's command with another step count (a fixed warmup keeps the resolved
  config the same for any count, so a shorter resume is the same run)."""
  return [f"--train_steps={steps}" if a.startswith("--train_steps=") else a
          for a in _binary(data, run_dir)] + ["--warmup_steps=2"]


def test_second_process_is_refused_and_a_sigkilled_run_resumes(tmp_path):
  data = str(tmp_path / "data")
  synthetic.generate_benchmark(data, synthetic.SyntheticConfig.quick())
  run_dir = str(tmp_path / "run")
  deadline = time.time() + HARD_TIMEOUT_S
  runs = []
  try:
    first = Run("first", _command(data, run_dir, 100000))
    runs.append(first)
    while _latest_step(run_dir) < 3:  # holding the lock, with a checkpoint to resume from
      assert first.running(), first.output(3000)
      assert time.time() < deadline, first.output(3000)
      time.sleep(0.1)
    config_path = os.path.join(run_dir, "config.json")
    config_before = (open(config_path).read(), os.path.getmtime(config_path))

    second = Run("second", _command(data, run_dir, 100000))
    runs.append(second)
    assert second.wait(deadline) == 2, second.output(3000)
    errors = [l for l in second.lines if l.startswith("error: ")]
    assert len(errors) == 1 and second.lines[-1] == errors[0], second.output(3000)
    assert re.match(rf"error: run directory {re.escape(run_dir)} is in use by pid "
                    rf"{first.popen.pid} on host {re.escape(run_lock.HOST)} since "
                    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", errors[0]), errors[0]
    assert "Traceback" not in second.output()
    assert not re.search(r"^\[(train|init|resume)\]", second.output(), re.M)
    assert (open(config_path).read(), os.path.getmtime(config_path)) == config_before
    assert first.running(), "the holder must be unaffected"

    first.kill()  # SIGKILL: no chance to release the lock
    assert first.popen.returncode == -signal.SIGKILL
    assert os.path.exists(os.path.join(run_dir, run_lock.LOCK_FILE))
    resume_from = _latest_step(run_dir)

    resumed = Run("resumed", _command(data, run_dir, resume_from + 2))
    runs.append(resumed)
    assert resumed.wait(deadline) == 0, resumed.output(3000)
    assert re.search(rf"\[resume\] restored \S+ckpt-{resume_from} at step {resume_from}\b",
                     resumed.output()), resumed.output(3000)
    assert resumed.trained_steps() == [resume_from + 1, resume_from + 2]
    assert "[finished]" in resumed.output()
    assert not os.path.exists(os.path.join(run_dir, run_lock.LOCK_FILE))
  finally:
    for run in runs:
      run.kill()
