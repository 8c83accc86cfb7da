"""Tiny shared helper for the binaries: user errors become one line and exit code 2.

What counts as a user error: any :class:`RemedisError`, a bad command line (absl flag
parsing errors), a failed *write* — permission denied, read-only file system, disk
full or over quota — reported with the path that could not be written, and a failing
remote-storage (``gs://``) request: unreachable host, missing credentials, permission
denied, missing object (remedis_tf.remote_io). Everything else (real bugs) keeps its
traceback.

Before ``main`` runs, every ``gs://`` path among the flag values is stat-ed, so an
unreachable bucket or missing credentials stop the binary before it does any work, and a
missing remote *input* (``--input``, ``--model``, ``--init``, ``--*csv``,
``--*data_root``, ``--*folder``) is named with its flag.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from typing import Callable, List, Optional

import tensorflow as tf
from absl import app, flags, logging

from experiments import _startup
from remedis_tf import remote_io
from remedis_tf.errors import RemedisError
from remedis_tf.train import strategy as strategy_lib

flags.DEFINE_enum(_startup.FLAG, _startup.DEFAULT_LEVEL, list(_startup.LEVELS),
                  "TensorFlow's C++ log level (TF_CPP_MIN_LOG_LEVEL): 0 everything, 1 "
                  "warnings and errors, 2 errors (default), 3 nothing. At 2 and 3 the "
                  "start-up lines TensorFlow prints regardless (no CUDA driver, cuInit) are "
                  "dropped too; 0 or 1 brings them back. Read before TensorFlow starts (also "
                  "from a --flagfile). absl's --verbosity does not reach these lines.")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
# errno values of a failed write that the user can fix (permissions, space, quota).
_WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                           errno.EDQUOT, errno.EFBIG})
_NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded|File too large")
# io_utils.atomic_write_* and SavedModel/checkpoint writers use temporary siblings; name
# the file the user asked for instead.
_TEMP_SUFFIX = re.compile(r"\.tmp-[0-9a-f]{8}(?=/|$)|_temp/part-[^/]*$|\.tempstate\d+$")


def _user_path(path: str) -> str:
  return _TEMP_SUFFIX.sub("", str(path))


def fail(message: str) -> None:
  """Prints ``error: <message>`` (one line) to stderr and exits with status 2.

  Exits at once (``os._exit`` after flushing): a normal interpreter shutdown waits for
  tf.data's decoding threads, and native libraries (libjpeg) would print their own
  complaints after the error line. Every result file is written atomically, so nothing
  half-written is left behind.
  """
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(EXIT_USER_ERROR)  # pylint: disable=protected-access


def interrupted() -> None:
  """A Ctrl-C outside the training steps (start-up, evaluation, a second Ctrl-C): one line
  on stderr, exit status 130 at once (no traceback, no wait for tf.data's threads).
  Checkpoints already written are kept; a training run saves at its step boundary itself."""
  print("stopped: interrupted (Ctrl-C); checkpoints already written are kept, run the same "
        "command to resume", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access


def write_error_message(e: BaseException) -> Optional[str]:
  """One-line message naming the path for a failed file write, else None (not ours).

  Handles ``OSError`` with a write-type errno, ``tf.errors.PermissionDeniedError`` and
  ``tf.errors.ResourceExhaustedError`` caused by a full disk (not GPU out-of-memory).
  """
  if isinstance(e, OSError):
    if e.errno not in _WRITE_ERRNOS:
      return None
    path = _user_path(e.filename) if e.filename else "?"
    return f"cannot write {path}: {e.strerror or e}"
  if isinstance(e, tf.errors.PermissionDeniedError) or (
      isinstance(e, tf.errors.ResourceExhaustedError) and _NO_SPACE.search(e.message or "")):
    text = re.sub(r"\{\{[^}]*\}\}", "", e.message or "")
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text).strip().splitlines()[0] if text.strip() else ""
    path, sep, reason = text.partition("; ")
    if not sep:
      return f"cannot write output: {text or type(e).__name__}"
    return f"cannot write {_user_path(path.strip())}: {reason.strip()}"
  return None


_GS_PATH = re.compile(r"gs://[^\s,;]+")
# Flags naming an existing file or directory (outputs, prefixes and NAME=PATH lists may
# name something that does not exist yet; the library checks those itself).
_INPUT_FLAGS = ("input", "model", "init")
_INPUT_SUFFIXES = ("csv", "data_root", "folder")


def _is_input_flag(name: str) -> bool:
  return name.lstrip("-") in _INPUT_FLAGS or name.lstrip("-").endswith(_INPUT_SUFFIXES)


def remote_flag_paths(flag_values: flags.FlagValues = flags.FLAGS) -> dict:
  """``{"--flag": gs:// path}`` for every gs:// path in the parsed flag values (several
  per flag for lists and NAME=PATH values, keyed ``--flag``, ``--flag[1]``, ...)."""
  found = {}
  for name, value in sorted(flag_values.flag_values_dict().items()):
    values = value if isinstance(value, (list, tuple)) else [value]
    paths = [p for v in values if isinstance(v, str) for p in _GS_PATH.findall(v)]
    for i, path in enumerate(paths):
      found[f"--{name}" + (f"[{i}]" if i else "")] = path
  return found


def check_remote_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Stats the gs:// paths given as flags (see module docstring); StorageError on failure."""
  remote_io.check_remote_paths(remote_flag_paths(flag_values),
                               must_exist=lambda key: _is_input_flag(key.split("[")[0]))


_HELP_FLAGS = frozenset({"-?", "--help", "--helpshort", "--helpfull", "--helpxml"})


def _parse_flags(argv: List[str]) -> List[str]:
  """absl's parser, but a bad flag is one ``error:`` line and exit 2 (not exit 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --helpfull)")
  except SystemExit as e:
    # absl exits 1 after printing --help/--helpfull; asking for help is not a failure.
    if any(a.split("=")[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise e
  return []  # unreachable


def _prepare_devices() -> None:
  """Splits the CPU into logical devices for ``--strategy=mirrored --num_cpu_devices=N``
  before any TF op runs (validating images or reading weights would start TF first)."""
  fv = flags.FLAGS
  if "strategy" not in fv or "num_cpu_devices" not in fv:
    return
  if fv.strategy == "mirrored" and fv.num_cpu_devices and fv.num_cpu_devices > 1:
    if not tf.config.list_physical_devices("GPU"):
      strategy_lib.configure_cpu_devices(fv.num_cpu_devices)


def run_main(main_fn: Callable) -> None:
  """``app.run(main_fn)``; user errors (see module docstring) print ``error: <message>``
  to stderr and exit 2."""

  def wrapped(argv):
    # TF's Python-side INFO logs (e.g. checkpoint sharding) would drown the progress lines.
    logging.set_verbosity(logging.WARNING)
    # Retracing notices appear when several runs share a process (demo, sweeps): benign.
    tf.get_logger().setLevel("ERROR")
    try:
      _prepare_devices()
      check_remote_flags()
      return main_fn(argv)
    except KeyboardInterrupt:
      interrupted()
    except RemedisError as e:
      fail(str(e))
    except Exception as e:  # pylint: disable=broad-except
      storage = remote_io.storage_error(e)
      message = str(storage) if storage is not None else write_error_message(e)
      if message is None:
        raise
      fail(message)

  app.run(wrapped, flags_parser=_parse_flags)
