"""Independent training jobs in worker processes: how the demo and the data-efficiency
sweep keep a small CPU busy.

One fine-tune of a small model leaves much of a 2-core CPU idle: about half of it is
single-threaded Python (building the model, tracing the step functions), and its small
batches do not fill two cores (measured in benchmarks/README.md, "Parallel fine-tunes").
Two fine-tunes side by side, each in its own process with its own TensorFlow, finish
sooner than one after the other.

:func:`run_jobs` runs ``fn(job)`` for each job, in this process one after the other when
``workers <= 1``, else in ``workers`` spawned processes, and returns the results in job
order. ``fn`` and the jobs must be picklable (a module-level function, frozen configs,
manifests). The numbers do not depend on the number of workers: every job is a training
run of its own, seeded by its config, and writes only into its own run directory, and a
worker keeps the thread pools a run in this process has (checked: a quick demo gives the
same numbers with ``workers`` 1 and 2, tests/runs/test_parallel.py).

Jobs, results and errors travel between this process and its own workers through
``multiprocessing`` queues (pickled by multiprocessing, as it always does); nothing read from
a file is ever unpickled (tests/reliability/test_no_pickle.py).

Stopping: a SIGTERM or Ctrl-C (SIGINT) received by this process is passed on to the workers
as SIGTERM, so each running training loop saves its checkpoint and returns ``preempted``
(the caller's job function reports that in its result). A job that has not started when
the stop arrives does not start: :func:`stop_requested` is true in its worker, and the job
function returns its "preempted" result before training. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import traceback
from multiprocessing import reduction
from typing import Any, Callable, List, Sequence

from remedis_tf.errors import TrainingError

_STOP = {"requested": False}


def stop_requested() -> bool:
  """True in a worker process once this process or its parent was asked to stop (a job
  function checks it before each training run); always False outside a worker."""
  return _STOP["requested"]


def _note_stop(signum, frame):  # pylint: disable=unused-argument
  _STOP["requested"] = True


def default_workers(num_jobs: int, cap: int = 2) -> int:
  """Worker processes for ``num_jobs`` jobs: one per CPU core, at most ``cap`` (each holds
  its own TensorFlow, ~1.5 GB) and at most ``num_jobs``."""
  return max(1, min(os.cpu_count() or 1, cap, num_jobs))


def workers_for(requested: int, num_jobs: int) -> int:
  """The ``workers`` setting of a binary or config: ``requested`` if > 0, else (0 = auto)
  :func:`default_workers`."""
  return requested if requested > 0 else default_workers(num_jobs)


def _worker(fn: Callable[[Any], Any], jobs, results) -> None:
  # Between training runs a stop signal only sets the flag (the training loop installs its
  # own handlers while it runs, and puts these back afterwards).
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, _note_stop)
  # Each worker keeps TensorFlow's default thread pools (one thread per core), as a run in
  # the parent has: a kernel's result can depend on how many threads split its reductions,
  # and with the same pools a job gives the same numbers here as in the parent. (Pools of
  # cores/workers threads were measured no faster on 2 cores.)
  while True:
    item = jobs.get()
    if item is None:
      return
    index, job = item
    try:
      value = fn(job)
      ok = True
    except BaseException as e:  # pylint: disable=broad-except
      ok = False
      value = e
      try:  # it travels back pickled: an error that cannot be comes back as its traceback
        reduction.ForkingPickler.dumps(e)
      except Exception:  # pylint: disable=broad-except
        value = TrainingError("".join(traceback.format_exception(e)).rstrip())
    results.put((index, ok, value))


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int = 1,
             log: Callable[[str], None] = print) -> List[Any]:
  """``[fn(job) for job in jobs]``, with up to ``workers`` jobs at a time in spawned
  worker processes (``workers <= 1`` or a single job: here, in order).

  An exception raised by a job is raised here again (the first one, in job order, after
  every running job has finished). A worker that dies (killed, out of memory) raises
  TrainingError naming its exit code.
  """
  if workers <= 1 or len(jobs) <= 1:
    return [fn(job) for job in jobs]
  workers = min(workers, len(jobs))
  ctx = multiprocessing.get_context("spawn")
  job_q, result_q = ctx.Queue(), ctx.Queue()
  for item in enumerate(jobs):
    job_q.put(item)
  for _ in range(workers):
    job_q.put(None)
  procs = [ctx.Process(target=_worker, args=(fn, job_q, result_q), daemon=True)
           for _ in range(workers)]
  log(f"[parallel] {len(jobs)} jobs in {workers} worker processes")
  state = {"signals": 0}

  def forward(signum, frame):  # pylint: disable=unused-argument
    state["signals"] += 1
    second_ctrl_c = signum == signal.SIGINT and state["signals"] > 1
    for p in procs:
      if p.is_alive() and p.pid:
        os.kill(p.pid, signal.SIGINT if second_ctrl_c else signal.SIGTERM)
    if second_ctrl_c:
      signal.default_int_handler(signum, frame)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  results: dict = {}
  try:
    for p in procs:
      p.start()
    while len(results) < len(jobs):
      try:
        index, ok, value = result_q.get(timeout=1.0)
      except queue.Empty:
        dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
        if dead or not any(p.is_alive() for p in procs):
          try:  # a result may have been queued just before the worker ended
            index, ok, value = result_q.get(timeout=2.0)
          except queue.Empty:
            codes = ", ".join(str(p.exitcode) for p in procs)
            raise TrainingError(f"a worker process of the parallel jobs ended without a "
                                f"result (exit codes {codes}); {len(results)} of "
                                f"{len(jobs)} jobs finished. Run the same command again "
                                "to resume") from None
        else:
          continue
      results[index] = (ok, value)
    for p in procs:
      p.join(timeout=30)
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    for p in procs:
      if p.is_alive():
        p.terminate()
  for index in range(len(jobs)):
    ok, value = results[index]
    if not ok:
      raise value
  return [results[i][1] for i in range(len(jobs))]


def worker_log(label: str) -> Callable[[str], None]:
  """A log function for a job: each line printed (flushed) with ``[label]`` in front, so
  the lines of jobs running side by side can be told apart."""
  def log(line: str) -> None:
    print(f"[{label}] {line}", flush=True)
  return log


__all__ = ["run_jobs", "stop_requested", "default_workers", "workers_for", "worker_log"]
