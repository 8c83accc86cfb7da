"""Stopping and agreeing between host-loop calls: the run directory's lock, SIGTERM
(preemption) and SIGINT (Ctrl-C), and the tiny cross-worker collectives that keep a multi-worker run in lock step.

Preemption uses a plain SIGTERM flag, not ``tf.distribute.experimental.
PreemptionCheckpointHandler``: that handler is a no-op on Cloud TPU / CPU VMs, exits the
process itself and keeps its own run counter in the checkpoint (docs/tpu.md). A SIGTERM on
any worker is shared with the others at the next host-loop boundary (one tiny all-reduce per
call, :meth:`WorkerSync.gather`), so all of them save the same step and stop together.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from remedis_tf import remote_io, run_lock
from remedis_tf.errors import RunDirLockedError
from remedis_tf.train import strategy as strategy_lib


#: The signals that stop a run cleanly (save at the step boundary, then return).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
  """Records SIGTERM or SIGINT (Ctrl-C) so the loop can save and stop between host-loop
  calls.

  A second Ctrl-C while the first is pending raises KeyboardInterrupt at once (for a user
  who does not want to wait for the save). Only the main thread can install signal
  handlers; elsewhere this never fires.
  """

  def __init__(self, enabled: bool):
    self.requested = False
    self.signal_name = ""
    self._previous = {}
    self._enabled = enabled and threading.current_thread() is threading.main_thread()

  def __enter__(self):
    if self._enabled:
      for signum in STOP_SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self.requested:
      signal.default_int_handler(signum, frame)
    self.requested = True
    self.signal_name = self.signal_name or (
        "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name)

  def __exit__(self, *exc):
    if self._enabled:
      for signum, previous in self._previous.items():
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


class WorkerSync:
  """Tiny cross-worker collectives that keep multi-worker runs in lock step.

  Every worker must call the methods in the same order (they are collectives). With one
  worker they are plain local computations.
  """

  def __init__(self, strategy: tf.distribute.Strategy):
    self._strategy = strategy
    self._multi = strategy_lib.num_workers(strategy) > 1
    if self._multi:
      @tf.function
      def gather(value):
        per_replica = strategy.run(lambda v: tf.reshape(v, [1]), args=(value,))
        return strategy.gather(per_replica, axis=0)
      self._gather = gather

  def gather(self, value: int) -> np.ndarray:
    """This value from every replica of every worker (int64 vector)."""
    if not self._multi:
      return np.asarray([value], np.int64)
    return self._gather(tf.constant(value, tf.int64)).numpy()

  def any(self, flag: bool) -> bool:
    """True when ``flag`` is true on at least one worker."""
    return bool(np.any(self.gather(int(bool(flag)))))


def lock_run_dir(run_dir: str, chief: bool, sync: WorkerSync, timeout_s: float, steal: bool,
                 retry: remote_io.RetryPolicy, log: Callable[[str], None]
                 ) -> Optional[run_lock.RunLock]:
  """One writer per run directory: the chief locks it (``remedis_tf.run_lock``) for the whole
  job, before anything is written, and every worker raises RunDirLockedError when it cannot.
  Returns the chief's held lock (release it at the end); None on other workers."""
  lock, refused = None, None
  if chief:
    lock = run_lock.RunLock(run_dir, timeout_s=timeout_s, steal=steal, log=log)
    try:
      remote_io.with_retries(lock.acquire, run_dir, "run directory", retry, log)
    except RunDirLockedError as e:
      refused = e
  if sync.any(refused is not None):
    raise refused or RunDirLockedError(
        f"the chief could not lock run directory {run_dir} (another job uses it)")
  return lock
