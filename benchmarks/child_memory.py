"""Peak memory of a child process, measured the way that is right under ``subprocess``.

``ru_maxrss`` from ``os.wait4`` is wrong for our children: ``subprocess`` starts them with
vfork, and Linux hands the parent's high-water mark to the child when it execs, so a child
of a big parent (a long pytest session, a benchmark driver that has imported TF) "peaks" at
the parent's size. The child's own ``VmHWM`` in ``/proc/<pid>/status`` is not inherited;
it is polled while the child runs, since it vanishes when the child exits.
Used by ``benchmarks.run`` and by the reliability tests (``tests/reliability/conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Optional, Tuple


def vm_hwm_mb(pid: int) -> float:
  """The process's own peak RSS so far in MiB (``VmHWM``); 0 once it has exited or when
  ``/proc`` cannot be read."""
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return 0.0


def wait_with_peak(proc: subprocess.Popen, timeout: Optional[float] = None,
                   poll_s: float = 0.02) -> Tuple[int, float, bool]:
  """Waits for ``proc`` while polling its ``VmHWM``; kills it after ``timeout`` seconds.

  Returns ``(exit code, peak RSS in MiB, timed out)`` and sets ``proc.returncode``. On an
  exception in the waiting thread (e.g. KeyboardInterrupt) the child is killed first.
  """
  deadline = None if timeout is None else time.time() + timeout
  peak, timed_out = 0.0, False
  try:
    while True:
      peak = max(peak, vm_hwm_mb(proc.pid))
      pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if deadline is not None and time.time() > deadline:
        proc.kill()
        _, status, _ = os.wait4(proc.pid, 0)
        timed_out = True
        break
      time.sleep(poll_s)
  except BaseException:
    proc.kill()
    raise
  proc.returncode = os.waitstatus_to_exitcode(status)
  return proc.returncode, peak, timed_out
