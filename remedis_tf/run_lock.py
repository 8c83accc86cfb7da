"""One writer per run directory: a lock file ``RUN_DIR/run.lock``.

The lock file is JSON naming its holder (host, pid, start time, a random token, the last
heartbeat). A second process on the same run directory stops with RunDirLockedError
naming the holder before it writes anything.

Two protocols, chosen by the path:

* **Local disks** (and NFS with lock support): an exclusive ``fcntl.flock`` on the lock
  file. The kernel drops the lock when its process dies in any way (SIGKILL, a crash; a
  power loss ends the process too), so a lock can never be stale and a resume after a
  kill is never blocked. File systems without flock fall back to the heartbeat protocol.
* **Remote storage** (``gs://``) has neither locks nor exclusive create, so the holder
  refreshes ``heartbeat`` every ``timeout_s / 10`` seconds from a daemon thread. A lock is
  stale when its heartbeat is older than ``timeout_s`` (default 600 s, ``--lock_timeout_s``)
  or when its holder ran on this host under a pid that no longer exists; a stale lock is
  taken over. ``steal=True`` (``--steal_lock``) takes over a live-looking lock (e.g. a
  dead host's, before the timeout). Acquiring writes the lock, waits ``settle_s`` (2 s) and reads
  it back: another writer that wrote in between wins, and this one stops. Residual race
  (documented in docs/troubleshooting.md): two processes whose read and write are more
  than ``settle_s`` apart can both believe they won; the loser notices at its next
  heartbeat (its token was overwritten) and its loop stops at the next host-loop boundary
  without saving, so two writers overlap for about one heartbeat interval at most.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Dict, Optional

import tensorflow as tf

from remedis_tf import io_utils
from remedis_tf.errors import ConfigError, RunDirLockedError

LOCK_FILE = "run.lock"
DEFAULT_TIMEOUT_S = 600.0
HOST = socket.gethostname()

# Tokens of the locks this process holds (a lock naming this host and pid is live only if
# listed here).
_HELD: Dict[str, "RunLock"] = {}


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # another user's live process
  return True


def _when(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
      "%Y-%m-%d %H:%M:%S UTC")


def describe(holder: Optional[dict], now: float) -> str:
  """``pid P on host H since <UTC time> (heartbeat N s ago)`` for a lock file's content."""
  if not holder:
    return "an unknown process (the lock file is empty or unreadable)"
  age = now - float(holder.get("heartbeat", holder.get("started", now)))
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
          f"{_when(float(holder.get('started', now)))} (heartbeat {max(age, 0):.0f} s ago)")


class RunLock:
  """Exclusive lock on a run directory (see module docstring).

  Use as a context manager or call :meth:`acquire` / :meth:`release`. ``clock``,
  ``sleep`` and ``host`` (this machine's name) are injectable for tests; ``mode`` is
  ``auto`` (flock on local paths, heartbeat on remote ones), ``flock`` or ``heartbeat``.
  ``settle_s`` (heartbeat protocol): wait between writing the lock and reading it back;
  default ``min(2 s, timeout_s / 20)``.
  """

  def __init__(self, run_dir: str, timeout_s: float = DEFAULT_TIMEOUT_S,
               steal: bool = False, mode: str = "auto", settle_s: Optional[float] = None,
               clock: Callable[[], float] = time.time,
               sleep: Callable[[float], None] = time.sleep,
               log: Callable[[str], None] = print, host: str = HOST):
    if timeout_s <= 0:
      raise ConfigError(f"--lock_timeout_s must be > 0, got {timeout_s}")
    if mode not in ("auto", "flock", "heartbeat"):
      raise ConfigError(f"unknown lock mode {mode!r}")
    if mode == "auto":
      mode = "heartbeat" if "://" in run_dir else "flock"
    self.run_dir, self.path = run_dir, os.path.join(run_dir, LOCK_FILE)
    self.timeout_s, self.steal, self.mode = timeout_s, steal, mode
    self.settle_s = min(2.0, timeout_s / 20) if settle_s is None else settle_s
    self.heartbeat_every_s = timeout_s / 10
    self._clock, self._sleep, self._log, self.host = clock, sleep, log, host
    self.token = uuid.uuid4().hex
    self.lost_to: Optional[dict] = None  # the holder that took the lock over, if any
    self._fd: Optional[int] = None
    self._held = False
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._started = clock()

  # -- content -------------------------------------------------------------------------

  def _content(self) -> dict:
    return {"token": self.token, "host": self.host, "pid": os.getpid(), "started": self._started,
            "heartbeat": self._clock(), "heartbeat_every_s": self.heartbeat_every_s}

  def read(self) -> Optional[dict]:
    """The lock file's content; None when there is none, {} when it is unreadable."""
    try:
      with tf.io.gfile.GFile(self.path, "r") as f:
        text = f.read()
    except tf.errors.NotFoundError:
      return None
    try:
      content = json.loads(text)
    except ValueError:
      return {}
    return content if isinstance(content, dict) else {}

  def _busy(self, holder: Optional[dict], extra: str = "") -> RunDirLockedError:
    fix = ("wait for it to finish or stop it" if self.mode == "flock" else
           f"wait for it to finish or stop it; a lock whose heartbeat is older than "
           f"--lock_timeout_s={self.timeout_s:g} is taken over, --steal_lock takes it now "
           f"(only when that process is really gone)")
    return RunDirLockedError(
        f"run directory {self.run_dir} is in use by {describe(holder, self._clock())}"
        f"{extra}: one process writes a run directory at a time; {fix}, or use another "
        f"--run_dir")

  def is_stale(self, holder: Optional[dict]) -> bool:
    """Heartbeat protocol: whether ``holder``'s lock may be taken over."""
    if holder is None or not holder.get("token"):
      return True
    if holder.get("host") == self.host:
      pid = int(holder.get("pid", -1))
      if pid == os.getpid():  # this process: held unless left by an earlier, failed run
        return holder["token"] not in _HELD
      if not _pid_alive(pid):
        return True
    limit = max(self.timeout_s, 3 * float(holder.get("heartbeat_every_s", 0)))
    return self._clock() - float(holder.get("heartbeat", 0)) > limit

  # -- acquire / release ---------------------------------------------------------------

  def acquire(self) -> "RunLock":
    """Takes the lock or raises RunDirLockedError naming the holder (writes nothing then)."""
    io_utils.ensure_dir(self.run_dir)
    if self.mode == "flock" and self._acquire_flock():
      pass
    else:
      self.mode = "heartbeat"
      self._acquire_heartbeat()
    self._held = True
    _HELD[self.token] = self
    return self

  def _acquire_flock(self) -> bool:
    """True once locked; False when the file system has no flock (use heartbeats)."""
    for _ in range(10):
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        raise self._busy(self.read()) from None
      except OSError as e:
        os.close(fd)
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
          return False
        raise
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if not same:  # the previous holder removed the file between our open and flock
        os.close(fd)
        continue
      data = (json.dumps(self._content(), sort_keys=True) + "\n").encode()
      os.ftruncate(fd, 0)
      os.pwrite(fd, data, 0)
      os.fsync(fd)
      self._fd = fd
      return True
    raise RunDirLockedError(f"run directory {self.run_dir}: the lock file {self.path} keeps "
                            f"being replaced by other processes; use another --run_dir")

  def _write(self) -> None:
    # Write + rename: readers never see a half-written lock (on gs:// the rename is a
    # server-side copy, which also appears at once).
    io_utils.atomic_write_text(self.path, json.dumps(self._content(), sort_keys=True) + "\n")

  def _acquire_heartbeat(self) -> None:
    holder = self.read()
    if holder is not None and not self.steal and not self.is_stale(holder):
      raise self._busy(holder)
    if holder and holder.get("token") in _HELD and holder.get("host") == self.host:
      raise self._busy(holder, " (this process)")  # even --steal_lock: it is alive
    if holder:
      self._log(f"[lock] taking over {'the' if self.steal else 'a stale'} lock of "
                f"{describe(holder, self._clock())} in {self.run_dir}")
    self._write()
    self._sleep(self.settle_s)
    back = self.read()
    if not back or back.get("token") != self.token:
      raise self._busy(back, " (it took the lock at the same moment)")
    self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat",
                                    daemon=True)
    self._thread.start()

  def heartbeat(self) -> bool:
    """Refreshes the heartbeat (heartbeat protocol); False once another process holds
    the lock (see :attr:`lost_to`)."""
    if self.mode != "heartbeat" or not self._held or self.lost_to is not None:
      return self.lost_to is None
    back = self.read()
    if back == {}:  # caught mid-write (non-atomic file systems): look again next time
      return True
    if back is None or back.get("token") != self.token:
      self.lost_to = back or {}
      return False
    self._write()
    return True

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_every_s):
      try:
        if not self.heartbeat():
          return
      except (tf.errors.OpError, OSError) as e:  # keep beating; the loop's writes retry
        self._log(f"[lock] heartbeat of {self.path} failed ({type(e).__name__}); retrying")

  @property
  def lost(self) -> bool:
    """True when another process took the lock over (the holder must stop writing)."""
    return self.lost_to is not None

  def lost_message(self) -> str:
    return (f"run directory {self.run_dir} was taken over by "
            f"{describe(self.lost_to, self._clock())} (this run's heartbeat was older than "
            f"its --lock_timeout_s, or --steal_lock); stopped without saving so as not to "
            f"overwrite its checkpoints")

  def release(self) -> None:
    """Removes the lock if this process still holds it (idempotent)."""
    if not self._held:
      return
    self._held = False
    _HELD.pop(self.token, None)
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
    if self._fd is not None:
      try:
        if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
          os.remove(self.path)
      except FileNotFoundError:
        pass
      finally:
        os.close(self._fd)  # drops the flock
        self._fd = None
      return
    try:
      back = self.read()
      if back and back.get("token") == self.token:
        tf.io.gfile.remove(self.path)
    except tf.errors.OpError as e:
      self._log(f"[lock] could not remove {self.path} ({type(e).__name__}); a later run "
                f"takes it over once its heartbeat is {self.timeout_s:g} s old")

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
