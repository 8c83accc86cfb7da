"""Ctrl-C (SIGINT) is handled like SIGTERM: the binary saves at the step boundary, prints
one ``[preempted]`` line and exits 0, with no traceback and no hang (issue 19, bug 2); a
second Ctrl-C stops at once."""

import os
import re
import signal
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.train.coordination import Preemption
from subprocess_runs import Run, python

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "data"))
import image_files as F  # noqa: E402  pylint: disable=wrong-import-position

HARD_TIMEOUT_S = 300  # only guards against hangs


def _data(root):
  os.makedirs(os.path.join(root, "img"))
  rng = np.random.default_rng(0)
  rows = ["Path,Patient,A,B"]
  for i in range(8):
    F.write(os.path.join(root, "img", f"{i}.png"),
            F.png_bytes(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)))
    rows.append(f"img/{i}.png,p{i},{i % 2},{(i // 2) % 2}")
  with open(os.path.join(root, "train.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")
  return os.path.join(root, "train.csv")


def test_sigint_saves_at_the_step_boundary_and_exits(tmp_path):
  csv = _data(str(tmp_path / "data"))
  run_dir = str(tmp_path / "run")
  run = Run("finetune", python(
      "-m", "experiments.finetune", "--train_source=csv", f"--train_csv={csv}",
      f"--train_data_root={tmp_path / 'data'}", "--train_label_columns=A,B", "--variant=tiny",
      "--image_size=32", "--train_steps=400", "--batch_size=4", "--lr_schedule=constant",
      "--steps_per_loop=1", "--log_every=1", "--checkpoint_every=1000",
      f"--run_dir={run_dir}"))
  deadline = time.time() + HARD_TIMEOUT_S
  try:
    while not run.trained_steps() or run.trained_steps()[-1] < 2:
      assert run.running(), run.output()
      assert time.time() < deadline, "the run never reached step 2"
      time.sleep(0.02)
    run.popen.send_signal(signal.SIGINT)
    assert run.wait(deadline) == 0, run.output()
    out = run.output()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    stopped = re.findall(r"\[preempted\] SIGINT \(Ctrl-C\) received: checkpoint \S+ holds "
                         r"step (\d+); run the same command to resume", out)
    assert len(stopped) == 1, out
    step = int(stopped[0])
    assert 2 <= step < 400
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    assert latest and latest.endswith(f"ckpt-{step}"), latest
  finally:
    run.kill()


def test_a_second_sigint_interrupts_at_once():
  # The handler in place before is restored: Python's default, or SIG_IGN where the suite
  # runs as a background job of a non-interactive shell (which starts it ignoring SIGINT).
  before = signal.getsignal(signal.SIGINT)
  with Preemption(True) as preemption:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)
    assert preemption.requested and preemption.signal_name == "SIGINT (Ctrl-C)"
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.01)
  assert signal.getsignal(signal.SIGINT) is before
