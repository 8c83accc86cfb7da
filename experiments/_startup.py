"""Quiet TensorFlow start-up for the binaries (imported first, by ``experiments/__init__``).

Importing TensorFlow and looking for a GPU prints lines such as::

  WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
  I0000 00:00:1796307427.204102 28575 cudart_stub.cc:31] Could not find cuda drivers ...
  E0000 00:00:1796307435.022590 28575 cuda_platform.cc:52] failed call to cuInit: ...

on every run of a CPU machine. ``TF_CPP_MIN_LOG_LEVEL`` (which this module sets to 2,
errors only, unless the environment or ``--tf_log_level`` says otherwise) silences
TensorFlow's own C++ log, but the ``cudart_stub`` lines are written by absl's C++ logging
before TensorFlow initialises it, whatever the environment says. So, at log level 2 or 3,
TensorFlow is imported and its GPU platform started here with stderr (file descriptor 2)
sent to a temporary file; afterwards every captured line except these start-up lines
(:data:`STARTUP_LINE`) is written to the real stderr, so a genuine import problem is still
seen. ``--tf_log_level=0`` or ``1`` (or ``TF_CPP_MIN_LOG_LEVEL=0``/``1``) shows
everything TensorFlow prints. The flag may also be given in a ``--flagfile``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, List, Optional, Sequence

FLAG = "tf_log_level"
LEVELS = ("0", "1", "2", "3")
DEFAULT_LEVEL = "2"
# The lines TensorFlow's C++ start-up prints whatever TF_CPP_MIN_LOG_LEVEL says (no CUDA
# driver, no GPU, CPU features); scripts/test.sh drops the same ones from xdist workers.
STARTUP_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE][0-9]{4} [0-9:. ]+[0-9]+ (cudart_stub|cuda_platform|cuda_executor"
    r"|cuda_diagnostics|cpu_feature_guard)\.cc)")


def _flagfile_args(path: str) -> List[str]:
  try:
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f]
  except OSError:
    return []  # absl reports an unreadable --flagfile itself
  return [line for line in lines if line and not line.startswith(("#", "//"))]


def requested_level(argv: Sequence[str], depth: int = 0) -> Optional[str]:
  """The value of ``--tf_log_level`` among ``argv[1:]`` (and its ``--flagfile``s), the
  last one winning as in absl; None when absent or not one of :data:`LEVELS` (absl then
  rejects a bad value with the usual one-line error)."""
  level = None
  args = list(argv[1:])
  i = 0
  while i < len(args):
    arg = args[i]
    name, eq, value = arg.lstrip("-").partition("=")
    if arg.startswith("-") and name == FLAG:
      if not eq and i + 1 < len(args):
        i += 1
        value = args[i]
      level = value
    elif arg.startswith("-") and name == "flagfile" and eq and depth < 4:
      level = requested_level([""] + _flagfile_args(value), depth + 1) or level
    i += 1
  return level if level in LEVELS else None


def set_log_level(argv: Sequence[str]) -> str:
  """Sets ``TF_CPP_MIN_LOG_LEVEL`` (the flag, else the environment, else 2); returns it."""
  level = requested_level(argv)
  if level is not None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = level
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL)
  return os.environ["TF_CPP_MIN_LOG_LEVEL"]


@contextlib.contextmanager
def startup_lines_dropped(enabled: bool) -> Iterator[None]:
  """Inside, file descriptor 2 goes to a temporary file; on leaving (also on an
  exception) the captured text minus :data:`STARTUP_LINE` lines goes to the real stderr."""
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", "replace")
      kept = [line for line in text.splitlines(True) if not STARTUP_LINE.match(line)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


_QUIET = set_log_level(sys.argv) in ("2", "3") and "tensorflow" not in sys.modules
with startup_lines_dropped(_QUIET):
  import tensorflow as tf  # noqa: E402  (under the capture: that is the point)

  if _QUIET:
    tf.config.list_physical_devices("GPU")  # CUDA's failed cuInit prints here, not later
