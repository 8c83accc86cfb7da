"""Subprocess helper for the multi-process training tests (not a test module).

A :class:`Run` starts a command in its own process group, collects its output lines in a
thread (so the test can watch progress while it runs), and can always be killed.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_LINE = re.compile(r"\[train\] step (\d+)/(\d+)")


class Run:
  """One subprocess with collected output; use ``kill()`` in a ``finally``."""

  def __init__(self, name, argv, env=None):
    self.name = name
    self.lines = []
    self.popen = subprocess.Popen(
        argv, env=dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="2",
                       PYTHONUNBUFFERED="1"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.popen.stdout:
      self.lines.append(line.rstrip("\n"))

  def output(self, tail=None):
    """Everything printed so far (the last ``tail`` characters when given)."""
    text = "\n".join(self.lines)
    return text[-tail:] if tail else text

  def trained_steps(self):
    """Steps announced by ``[train] step N/T`` lines, in order."""
    return [int(m.group(1)) for m in map(TRAIN_LINE.search, list(self.lines)) if m]

  def running(self):
    return self.popen.poll() is None

  def wait(self, deadline):
    """Exit status; AssertionError (with the output) when the deadline passes first."""
    try:
      self.popen.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      raise AssertionError(f"{self.name} did not finish in time; output:\n"
                           f"{self.output(4000)}") from None
    self._reader.join(timeout=10)
    return self.popen.returncode

  def kill(self):
    """SIGKILLs the whole process group if still running."""
    if self.running():
      try:
        os.killpg(self.popen.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      self.popen.wait(timeout=30)


def python(*args):
  """argv for this interpreter."""
  return [sys.executable] + list(args)
