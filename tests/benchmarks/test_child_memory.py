"""benchmarks.child_memory: a child's own peak RSS, not the parent's high-water mark."""

import subprocess
import sys

from benchmarks import child_memory


def test_child_peak_is_its_own_not_the_parents():
  ballast = bytearray(400 * 2**20)  # this process now peaks above 400 MiB
  ballast[::4096] = b"x" * len(ballast[::4096])
  code = "b = bytearray(60 * 2**20); b[::4096] = b'y' * len(b[::4096]); import time; time.sleep(0.3)"
  proc = subprocess.Popen([sys.executable, "-c", code])
  rc, peak, timed_out = child_memory.wait_with_peak(proc, timeout=60)
  assert rc == 0 and not timed_out
  assert 60 <= peak < 300, peak  # its own ~70 MiB, not the parent's > 400 MiB
  del ballast


def test_timeout_kills_the_child():
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
  rc, _, timed_out = child_memory.wait_with_peak(proc, timeout=0.5)
  assert timed_out and rc != 0
