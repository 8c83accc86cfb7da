"""The one custom training loop shared by every stage.

``run_loop(task, strategy, loop_config)`` drives any :class:`Task`: it builds the task's
models under the strategy, restores the run directory's latest checkpoint (resume always
wins over init weights), runs ``strategy.run(task.train_step)`` inside a ``tf.function``
that performs up to ``steps_per_loop`` steps per call (what TPUs need), and between calls
writes TensorBoard summaries, prints progress with images/s and ETA, saves checkpoints,
stops on a non-finite loss without touching the last good checkpoint, and saves then
exits cleanly on SIGTERM (preemption).

Exact resumption: the input pipeline is a pure function of (seed, step) and the task's
per-step randomness is derived from the step, so a resumed run produces the same weights
as an uninterrupted one.

Multi-worker (``MultiWorkerMirroredStrategy``): every worker runs this loop in lock step.
Only the chief writes summaries and ``config.json``; every worker saves checkpoints (TF
requires it), non-chief workers into a scratch directory that is deleted at the end. All
workers restore from the chief's ``checkpoints/`` (so ``run_dir`` must be shared, e.g.
``gs://``), and they check that they restored the same step. A SIGTERM on any worker is
shared with the others at the next host-loop boundary (one tiny all-reduce per call), so
all of them save the same step and stop together.

Preemption uses a plain SIGTERM flag, not ``tf.distribute.experimental.
PreemptionCheckpointHandler``: that handler is a no-op on Cloud TPU / CPU VMs, exits the
process itself and keeps its own run counter in the checkpoint (docs/tpu.md).

Checkpoint atomicity: TF writes a checkpoint's shards into ``ckpt-N_temp/``, merges them
into ``ckpt-N.index``/``ckpt-N.data-*`` and only then rewrites the ``checkpoint`` state
file (write to a temp file + rename), so a crash during a save leaves the state pointing
at the previous, complete checkpoint. On resume, a latest checkpoint that cannot be read
is skipped in favour of the previous one (tests/train/test_preemption.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np
import tensorflow as tf

from remedis_tf import configs, io_utils, remote_io, run_lock
from remedis_tf.errors import (CheckpointError, ConfigError, RunDirLockedError, StorageError,
                               TrainingError)
from remedis_tf.train import strategy as strategy_lib

CHECKPOINT_SUBDIR = "checkpoints"

# Config fields a resumed run may change without being a "different run".
_RESUME_MUTABLE = ("total_steps", "log_every", "summary_every", "checkpoint_every",
                   "keep_checkpoints", "steps_per_loop", "strategy", "num_cpu_devices", "tpu",
                   "image_summary_steps", "eval_every", "run_dir", "init", "xla",
                   "lock_timeout_s", "steal_lock")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """Cadences and bookkeeping of a training run.

  Attributes:
    run_dir: directory for checkpoints (``checkpoints/``), summaries (``train/``) and the
      resolved ``config.json``. Local path or ``gs://``.
    total_steps: optimizer steps to train for (a resumed run continues up to this).
    steps_per_loop: steps executed per ``tf.function`` call (host loop); events
      (checkpoint, summary, eval) happen on call boundaries.
    checkpoint_every: save every N steps (independent of the summary interval); a final
      checkpoint is always written.
    keep_checkpoints: how many recent checkpoints to keep.
    summary_every: TensorBoard scalars every N steps.
    log_every: progress line every N steps.
    eval_every: call the task's evaluation hook every N steps (0 = only at the end).
    xla: compile the per-replica train step with XLA (``jit_compile=True``). Needs a
      single replica in the whole run (default strategy): off TPU, cross-replica
      collectives cannot run inside a compiled step. On TPU it is a no-op because TPUs
      compile every step anyway.
    handle_sigterm: save a checkpoint and stop cleanly on SIGTERM.
    lock_timeout_s: a ``gs://`` run directory's lock whose heartbeat is older than this is
      stale and taken over (remedis_tf.run_lock; local disks need no timeout).
    steal_lock: take over the run directory's lock even if its holder looks alive
      (heartbeat protocol only; for a holder known to be gone).
  """
  run_dir: str
  total_steps: int
  steps_per_loop: int = 1
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  summary_every: int = 50
  log_every: int = 20
  eval_every: int = 0
  xla: bool = False
  handle_sigterm: bool = True
  lock_timeout_s: float = run_lock.DEFAULT_TIMEOUT_S
  steal_lock: bool = False

  def __post_init__(self):
    for name in ("total_steps", "steps_per_loop", "checkpoint_every", "keep_checkpoints",
                 "summary_every", "log_every"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.eval_every < 0:
      raise ConfigError(f"eval_every must be >= 0, got {self.eval_every}")
    if not self.lock_timeout_s > 0:
      raise ConfigError(f"lock_timeout_s must be > 0, got {self.lock_timeout_s}")


class Task(Protocol):
  """What the loop needs from a training stage (see ContrastiveTask / SupervisedTask)."""

  #: names of the scalar metrics ``train_step`` returns; the first is the loss.
  metric_names: Sequence[str]
  #: global batch size (examples per step, all replicas together).
  global_batch_size: int

  def build(self, strategy: tf.distribute.Strategy) -> None:
    """Creates models and optimizer (called inside ``strategy.scope()``)."""

  def checkpoint_items(self) -> Dict[str, Any]:
    """Trackables saved in checkpoints (backbone, heads, optimizer, ...)."""

  def initialize(self) -> List[str]:
    """Loads init weights for a fresh run; returns human-readable lines on what loaded."""

  def dataset_fn(self, input_context: Optional[tf.distribute.InputContext],
                 start_step: int) -> tf.data.Dataset:
    """Per-input-pipeline dataset positioned at ``start_step``."""

  def train_step(self, batch: Dict[str, tf.Tensor], step: tf.Tensor) -> Dict[str, tf.Tensor]:
    """One per-replica step: forward, loss, gradients, update. Returns scalar metrics."""

  def extra_summaries(self) -> Dict[str, float]:
    """Host-side scalars for TensorBoard (learning rate, weight norm, ...)."""

  def summarize_inputs(self) -> None:
    """Writes input summaries (e.g. augmented view pairs) into the default summary writer."""


@dataclasses.dataclass
class LoopResult:
  """What a finished (or preempted) run reports."""
  final_step: int
  resumed_from: int
  preempted: bool
  last_metrics: Dict[str, float]
  history: List[Dict[str, float]]
  checkpoint_path: Optional[str]


class _Preemption:
  """Records SIGTERM so the loop can save and stop between host-loop calls.

  Only the main thread can install signal handlers; elsewhere this never fires.
  """

  def __init__(self, enabled: bool):
    self.requested = False
    self._previous = None
    self._enabled = enabled and threading.current_thread() is threading.main_thread()

  def __enter__(self):
    if self._enabled:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._enabled:
      signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)


def check_run_config(run_dir: str, run_config: Dict[str, Any]) -> None:
  """Refuses to resume into ``run_dir`` if it was written by a different config.

  Fields listed in ``_RESUME_MUTABLE`` may differ (e.g. a longer ``total_steps``). Raises
  ConfigError listing the differing fields; writes ``config.json`` when absent.
  """
  path = os.path.join(run_dir, configs.RUN_CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return
  diffs = configs.config_differences(io_utils.read_json(path), configs.jsonable(run_config),
                                     ignore=_RESUME_MUTABLE, recorded_label="run dir has")
  if diffs:
    raise ConfigError(
        f"run directory {run_dir} was written by a different config ({'; '.join(diffs[:6])}"
        f"{' ...' if len(diffs) > 6 else ''}); use a new --run_dir or the original settings")


def _format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _next_boundary(step: int, every: int) -> int:
  return (step // every + 1) * every


def make_checkpoint_manager(checkpoint: tf.train.Checkpoint, run_dir: str, keep: int,
                            strategy: tf.distribute.Strategy) -> tf.train.CheckpointManager:
  """CheckpointManager in ``run_dir/checkpoints``; non-chief workers write to a scratch dir
  (TF requires every worker to save, but only the chief's copy is kept)."""
  directory = os.path.join(run_dir, CHECKPOINT_SUBDIR)
  if not strategy_lib.is_chief(strategy):
    directory = os.path.join(run_dir, f".worker{strategy_lib.worker_id(strategy)}_tmp")
  return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep,
                                    step_counter=None)


def _step_function(task: Task, strategy: tf.distribute.Strategy, xla: bool,
                   log: Callable[[str], None]) -> Callable:
  """The per-replica step, XLA-compiled when asked and possible."""
  if not xla:
    return task.train_step
  if strategy_lib.is_tpu(strategy):
    log("[xla] TPUStrategy compiles every step with XLA already; --xla changes nothing")
    return task.train_step
  if strategy.num_replicas_in_sync > 1:
    raise ConfigError(
        f"--xla needs a single replica per process, but {type(strategy).__name__} has "
        f"{strategy.num_replicas_in_sync}: cross-replica collectives (gradient all-reduce, "
        f"NT-Xent all_gather) cannot run inside a jit-compiled step off TPU. Drop --xla, or "
        f"use --strategy=default / --strategy=tpu")
  return tf.function(task.train_step, jit_compile=True)


class _WorkerSync:
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


def _restore_latest(checkpoint: tf.train.Checkpoint, directory: str,
                    log: Callable[[str], None]) -> Optional[str]:
  """Restores the newest readable checkpoint in ``directory``; None when there is none.

  A checkpoint whose files cannot be read (deleted, truncated by a crash outside TF's own
  write protocol) is skipped for the previous one, with a log line. A checkpoint of a
  different model raises (that is a configuration error, not damage).
  """
  state = tf.train.get_checkpoint_state(directory)
  if state is None or not state.model_checkpoint_path:
    return None
  candidates = [state.model_checkpoint_path] + [
      p for p in reversed(state.all_model_checkpoint_paths) if p != state.model_checkpoint_path]
  problems = []
  for path in candidates:
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
      return path
    # Read failures only (missing/truncated files: TF raises an OpError, or IndexError
    # for a short read); a model mismatch is an AssertionError/ValueError and propagates.
    except (tf.errors.OpError, IndexError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      problems.append(f"{os.path.basename(path)}: {first_line[:200]}")
      log(f"[resume] cannot read {path} ({type(e).__name__}); trying the previous checkpoint")
  raise CheckpointError(f"no readable checkpoint in {directory}: {'; '.join(problems)}")


def run_loop(task: Task, strategy: tf.distribute.Strategy, config: LoopConfig,
             run_config: Optional[Dict[str, Any]] = None,
             log: Callable[[str], None] = print,
             after_steps: Optional[Callable[[int, Dict[str, float]], None]] = None,
             eval_hook: Optional[Callable[[int], Dict[str, float]]] = None,
             retry: remote_io.RetryPolicy = remote_io.RetryPolicy()) -> LoopResult:
  """Trains ``task`` to ``config.total_steps``, resuming from ``config.run_dir`` if possible.

  Args:
    task: the stage to train.
    strategy: from :func:`remedis_tf.train.strategy.make_strategy`.
    config: cadences.
    run_config: all resolved configs of the run (written to ``config.json``; a run dir
      written by a different config is refused).
    log: where progress lines go.
    after_steps: called with (step, metrics) after every host-loop call (tests use it to
      interrupt runs).
    eval_hook: called with the step every ``eval_every`` steps and at the end; returns
      metrics that are logged and written to TensorBoard.
    retry: backoff for ``gs://`` checkpoint and summary writes that fail transiently.
  Returns:
    A LoopResult. Raises TrainingError on a non-finite loss (the last good checkpoint is
    kept untouched), RunDirLockedError when another process holds ``run_dir`` (nothing is
    written then), StorageError when remote writes keep failing (the last complete
    checkpoint is kept; the same call resumes from it).
  """
  chief = strategy_lib.is_chief(strategy)
  if not chief:
    base_log = log
    log = lambda line: base_log(f"[worker {strategy_lib.worker_id(strategy)}] {line}")
  run_dir = config.run_dir
  sync = _WorkerSync(strategy)
  # One writer per run directory: the chief locks it for the whole job, before anything
  # is written, and every worker stops when it cannot.
  lock, refused = None, None
  if chief:
    lock = run_lock.RunLock(run_dir, timeout_s=config.lock_timeout_s,
                            steal=config.steal_lock, log=log)
    try:
      remote_io.with_retries(lock.acquire, run_dir, "run directory", retry, log)
    except RunDirLockedError as e:
      refused = e
  if sync.any(refused is not None):
    raise refused or RunDirLockedError(
        f"the chief could not lock run directory {run_dir} (another job uses it)")
  try:
    return _run_locked(task, strategy, config, run_config, log, after_steps, eval_hook,
                       retry, chief, sync, lock)
  finally:
    if lock is not None:
      lock.release()


def _run_locked(task: Task, strategy: tf.distribute.Strategy, config: LoopConfig,
                run_config: Optional[Dict[str, Any]], log: Callable[[str], None],
                after_steps, eval_hook, retry: remote_io.RetryPolicy, chief: bool,
                sync: "_WorkerSync", lock: Optional[run_lock.RunLock]) -> LoopResult:
  """run_loop once the run directory is locked."""
  run_dir = config.run_dir
  if not chief:
    io_utils.ensure_dir(run_dir)
  if run_config is not None:
    check_run_config(run_dir, run_config)
    if chief:
      configs.write_run_config(run_dir, **run_config)
  step_fn = _step_function(task, strategy, config.xla, log)

  with _Preemption(config.handle_sigterm) as preemption:
    with strategy.scope():
      task.build(strategy)
      step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                             aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      checkpoint = tf.train.Checkpoint(step=step_var, **task.checkpoint_items())
    manager = make_checkpoint_manager(checkpoint, run_dir, config.keep_checkpoints, strategy)
    try:
      return _train(task, strategy, config, checkpoint, step_var, manager, step_fn,
                    preemption, chief, log, after_steps, eval_hook,
                    _Writes(run_dir, retry, log), sync, lock)
    finally:
      if not chief and tf.io.gfile.exists(manager.directory):
        tf.io.gfile.rmtree(manager.directory)


def _train(task: Task, strategy: tf.distribute.Strategy, config: LoopConfig,
           checkpoint: tf.train.Checkpoint, step_var: tf.Variable,
           manager: tf.train.CheckpointManager, step_fn: Callable, preemption: _Preemption,
           chief: bool, log: Callable[[str], None],
           after_steps: Optional[Callable[[int, Dict[str, float]], None]],
           eval_hook: Optional[Callable[[int], Dict[str, float]]], writes: "_Writes",
           sync: _WorkerSync, lock: Optional[run_lock.RunLock]) -> LoopResult:
  """run_loop's body once models, checkpoint and manager exist."""
  run_dir = config.run_dir
  latest = _restore_latest(checkpoint, os.path.join(run_dir, CHECKPOINT_SUBDIR), log)
  if latest:
    log(f"[resume] restored {latest} at step {int(step_var.numpy())}")
  else:
    for line in task.initialize():
      log(f"[init] {line}")
  start_step = int(step_var.numpy())
  steps = sync.gather(start_step)
  if np.any(steps != start_step):
    raise CheckpointError(
        f"workers restored different steps {sorted(set(steps.tolist()))} from "
        f"{os.path.join(run_dir, CHECKPOINT_SUBDIR)}: run_dir must be one directory that all "
        f"workers share (e.g. gs://bucket/run), not a local path on each host")
  resumed_from = start_step

  writer = (writes.call(lambda: tf.summary.create_file_writer(writes.summary_dir),
                        writes.summary_dir, "TensorBoard summaries") if chief
            else tf.summary.create_noop_writer())

  def summarize(step: int, write: Callable[[], None]) -> None:
    """``write()``'s summaries at ``step``; when they cannot be written even after the
    retries, saves a checkpoint of this step and stops."""
    try:
      writes.summaries(writer, step, write)
    except StorageError as e:
      path = saved_path if step == saved_step else writes.save(manager, step, chief,
                                                               saved_path)
      where = (f"checkpoint {path} holds step {step}: run the same command to resume"
               if path else "nothing trained yet: run the same command again")
      raise StorageError(f"{e} (stopped; {where})") from None

  dist_dataset = strategy.distribute_datasets_from_function(
      lambda ctx: task.dataset_fn(ctx, start_step))
  iterator = iter(dist_dataset)
  names = list(task.metric_names)

  @tf.function
  def run_steps(iterator, num_steps):
    sums = {k: tf.constant(0.0) for k in names}
    for i in tf.range(num_steps):
      batch = next(iterator)
      per_replica = strategy.run(step_fn, args=(batch, step_var + tf.cast(i, tf.int64)))
      sums = {k: sums[k] + tf.cast(strategy.reduce(tf.distribute.ReduceOp.MEAN,
                                                   per_replica[k], axis=None), tf.float32)
              for k in names}
    step_var.assign_add(tf.cast(num_steps, tf.int64))
    return {k: v / tf.cast(num_steps, tf.float32) for k, v in sums.items()}

  history: List[Dict[str, float]] = []
  last_metrics: Dict[str, float] = {}
  step = start_step
  saved_path, saved_step = latest, start_step
  if chief and start_step == 0:
    summarize(0, task.summarize_inputs)
  preempted = False
  t_start = time.time()
  t_window, step_window = t_start, step
  if step >= config.total_steps:
    log(f"[done] run already at step {step} >= total_steps {config.total_steps}")
  while step < config.total_steps:
    # All workers decide together (a collective), so they save the same step.
    shared = sync.gather(int(preemption.requested) | 2 * int(lock is not None and lock.lost))
    if np.any(shared & 2):
      raise RunDirLockedError(lock.lost_message() if lock is not None and lock.lost else
                              f"the chief lost the lock on run directory {run_dir}")
    if np.any(shared & 1):
      if step != saved_step:
        saved_path, saved_step = writes.save(manager, step, chief, saved_path), step
      log(f"[preempted] SIGTERM received: checkpoint {saved_path or '(none yet)'} holds "
          f"step {saved_step}; run the same command to resume")
      preempted = True
      break
    boundaries = [config.total_steps, step + config.steps_per_loop,
                  _next_boundary(step, config.checkpoint_every),
                  _next_boundary(step, config.summary_every),
                  _next_boundary(step, config.log_every)]
    if config.eval_every:
      boundaries.append(_next_boundary(step, config.eval_every))
    n = min(boundaries) - step
    try:
      metrics = {k: float(v) for k, v in run_steps(iterator, tf.constant(n)).items()}
    except tf.errors.OpError as e:  # e.g. gs:// training images unreachable mid-run
      error = remote_io.storage_error(e)
      if error is None:
        raise
      raise StorageError(f"{error} (while training steps {step + 1}-{step + n}; the last "
                         f"complete checkpoint {saved_path or '(none)'} is kept: run the "
                         f"same command to resume)") from None
    step += n
    loss = metrics[names[0]]
    if not math.isfinite(loss):
      raise TrainingError(
          f"non-finite loss ({loss}) in steps {step - n + 1}-{step} in {run_dir}; the last "
          f"good checkpoint "
          f"({saved_path or 'none'}) is untouched. Lower the learning rate or check the data")
    metrics["step"] = step
    history.append(metrics)
    last_metrics = metrics
    if step % config.log_every == 0 or step == config.total_steps:
      now = time.time()
      rate = (step - step_window) * task.global_batch_size / max(now - t_window, 1e-9)
      steps_per_s = (step - step_window) / max(now - t_window, 1e-9)
      eta = (config.total_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
      shown = " ".join(f"{k} {metrics[k]:.4f}" for k in names)
      log(f"[train] step {step}/{config.total_steps} {shown} | {rate:.1f} img/s | "
          f"ETA {_format_eta(eta)}")
      t_window, step_window = now, step
    if step % config.summary_every == 0 or step == config.total_steps:
      scalars = {k: metrics[k] for k in names}
      scalars.update(task.extra_summaries())
      summarize(step, lambda: [tf.summary.scalar(k, v) for k, v in scalars.items()])
    if eval_hook is not None and ((config.eval_every and step % config.eval_every == 0)
                                  or step == config.total_steps):
      eval_metrics = eval_hook(step)
      if eval_metrics:
        metrics.update(eval_metrics)  # kept in LoopResult.history for reports
        log("[eval] step {} {}".format(
            step, " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items())))
        summarize(step, lambda: [tf.summary.scalar(f"eval/{k}", v)
                                 for k, v in eval_metrics.items()])
    if step % config.checkpoint_every == 0 or step == config.total_steps:
      saved_path, saved_step = writes.save(manager, step, chief, saved_path), step
    if after_steps is not None:
      after_steps(step, metrics)
  summarize(step, lambda: None)  # flushes
  return LoopResult(final_step=step, resumed_from=resumed_from, preempted=preempted,
                    last_metrics=last_metrics, history=history, checkpoint_path=saved_path)


class _Writes:
  """Checkpoint saves and summary flushes with bounded retries on ``gs://`` hiccups."""

  def __init__(self, run_dir: str, retry: remote_io.RetryPolicy, log: Callable[[str], None]):
    self.run_dir, self.retry, self.log = run_dir, retry, log
    self.summary_dir = os.path.join(run_dir, "train")

  def call(self, fn: Callable[[], Any], path: str, what: str) -> Any:
    return remote_io.with_retries(fn, path, what, self.retry, self.log)

  def summaries(self, writer, step: int, write: Callable[[], Any]) -> None:
    """Runs ``write`` (tf.summary calls) with ``writer`` as the default writer at
    ``step``. The writer flushes when that block ends, which is where a remote write
    fails; a retry writes the block again."""
    def block():
      with writer.as_default(step=step):
        write()
    self.call(block, self.summary_dir, "TensorBoard summaries")

  def save(self, manager: tf.train.CheckpointManager, step: int, chief: bool,
           previous: Optional[str]) -> str:
    """Saves ``ckpt-<step>``; returns the chief's path (what a resume will read).

    StorageError after the retries names the previous complete checkpoint (``previous``),
    which a rerun of the same command resumes from.
    """
    directory = os.path.join(self.run_dir, CHECKPOINT_SUBDIR)
    try:
      path = self.call(lambda: manager.save(checkpoint_number=step), directory,
                       "checkpoint save to")
    except StorageError as e:
      raise StorageError(f"{e} (stopped at step {step}; the last complete checkpoint "
                         f"{previous or '(none)'} is kept: run the same command to "
                         f"resume)") from None
    if chief:
      return path
    return os.path.join(directory, os.path.basename(path))
