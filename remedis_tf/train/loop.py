"""The one custom training loop shared by every stage.

``run_loop(task, strategy, loop_config)`` drives any :class:`Task`: it builds the task's
models under the strategy, restores the run directory's latest checkpoint (resume always
wins over init weights), runs ``strategy.run(task.train_step)`` inside a ``tf.function``
that performs up to ``steps_per_loop`` steps per call (what TPUs need), and between calls
writes TensorBoard summaries, prints progress with images/s and ETA, saves checkpoints,
stops on a non-finite loss without touching the last good checkpoint, and saves then
exits cleanly on SIGTERM (preemption) and SIGINT (Ctrl-C)
(:mod:`remedis_tf.train.coordination`).

Exact resumption: the input pipeline is a pure function of (seed, step) and the task's
per-step randomness is derived from the step, so a resumed run produces the same weights
as an uninterrupted one. A run directory written by a different config is refused; each
config declares the fields a resumed run may change (``RESUMABLE_FIELDS``).

Multi-worker (``MultiWorkerMirroredStrategy``): every worker runs this loop in lock step.
Only the chief writes summaries and ``config.json``; every worker saves checkpoints
(:mod:`remedis_tf.train.checkpoints`). All workers restore from the chief's
``checkpoints/`` (so ``run_dir`` must be shared, e.g. ``gs://``), and they check that they
restored the same step. A SIGTERM on any worker is shared with the others at the next
host-loop boundary, so all of them save the same step and stop together.

The module is long because everything the loop does between host-loop calls (cadences,
checkpoints, resume checks, preemption, the run-directory lock, storage retries) works on
one run's state (``_TrainingRun``); split, each part would need all of it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
import tensorflow as tf

from remedis_tf import configs, io_utils, remote_io, run_lock
from remedis_tf.errors import (CheckpointError, ConfigError, RunDirLockedError, StorageError,
                               TrainingError)
from remedis_tf.train import checkpoints, coordination, steps
from remedis_tf.train import strategy as strategy_lib
from remedis_tf.train.checkpoints import CHECKPOINT_SUBDIR
from remedis_tf.train.coordination import Preemption, WorkerSync
from remedis_tf.train.progress import Progress
from remedis_tf.train.task_base import Task


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
    summary_every: TensorBoard scalars every N steps; 0 (default): :attr:`summary_interval`.
    log_every: progress line every N steps.
    eval_every: call the task's evaluation hook every N steps (0 = only at the end).
    xla: compile the per-replica train step with XLA (``jit_compile=True``). Needs a
      single replica in the whole run (default strategy): off TPU, cross-replica
      collectives cannot run inside a compiled step. On TPU it is a no-op because TPUs
      compile every step anyway.
    handle_sigterm: save a checkpoint and stop cleanly on SIGTERM and SIGINT (Ctrl-C).
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
  summary_every: int = 0
  log_every: int = 20
  eval_every: int = 0
  xla: bool = False
  handle_sigterm: bool = True
  lock_timeout_s: float = run_lock.DEFAULT_TIMEOUT_S
  steal_lock: bool = False

  # Cadences, bookkeeping and the step target: a resumed run may change them all except
  # handle_sigterm. (run_dir may differ in spelling, e.g. a moved or re-mounted directory.)
  RESUMABLE_FIELDS: ClassVar[Tuple[str, ...]] = (
      "run_dir", "total_steps", "steps_per_loop", "checkpoint_every", "keep_checkpoints",
      "summary_every", "log_every", "eval_every", "xla", "lock_timeout_s", "steal_lock")

  @property
  def summary_interval(self) -> int:
    """``summary_every``; when 0, ``min(50, max(steps_per_loop, total_steps // 20))``: ~20
    per short run, never splitting a host-loop call (a split costs a call's overhead)."""
    return self.summary_every or min(50, max(self.steps_per_loop, self.total_steps // 20))

  def __post_init__(self):
    for name in ("total_steps", "steps_per_loop", "checkpoint_every", "keep_checkpoints",
                 "summary_every", "log_every"):
      low = int(name != "summary_every")  # summary_every=0: scaled with the run
      if getattr(self, name) < low:
        raise ConfigError(f"must be >= {low}, got {getattr(self, name)}", field=name)
    if self.eval_every < 0:
      raise ConfigError(f"must be >= 0, got {self.eval_every}", field="eval_every")
    if not self.lock_timeout_s > 0:
      raise ConfigError(f"must be > 0, got {self.lock_timeout_s}", field="lock_timeout_s")


@dataclasses.dataclass
class LoopResult:
  """What a finished (or preempted) run reports."""
  final_step: int
  resumed_from: int
  preempted: bool
  last_metrics: Dict[str, float]
  history: List[Dict[str, float]]
  checkpoint_path: Optional[str]


# Records that may change on resume, stated when they do: the data (a retry after dropping
# bad files) and the learning rate derived from the (checked) optimizer config.
RESUMABLE_RECORDS = ("data.num_examples", "learning_rate")
# A section given as a plain dict rather than its config (tests, hand-written run configs)
# declares nothing, except this module's own one.
_DICT_SECTION_TYPES = {"loop": LoopConfig}


def resumable_paths(run_config: Mapping[str, Any]) -> Set[str]:
  """Dotted ``section.field`` paths of ``run_config`` that a resumed run may change.

  Each section's config declares its own fields (``RESUMABLE_FIELDS``, read through
  :func:`remedis_tf.configs.resumable_fields`); sections that are not configs (``stage``,
  ``data``, ...) have none.
  """
  paths: Set[str] = set()
  for section, value in run_config.items():
    owner = value if dataclasses.is_dataclass(value) else _DICT_SECTION_TYPES.get(section)
    paths.update(f"{section}.{name}" for name in configs.resumable_fields(owner))
  return paths


def check_run_config(run_dir: str, run_config: Dict[str, Any]) -> List[str]:
  """ConfigError (listing them) when ``run_dir``'s ``config.json`` differs in fields other
  than :func:`resumable_paths` and :data:`RESUMABLE_RECORDS` (e.g. a longer
  ``loop.total_steps``, fewer examples once bad files are dropped); else the allowed
  changes, one line each, for the run to state. No ``config.json`` passes."""
  path = os.path.join(run_dir, configs.RUN_CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return []
  allowed = resumable_paths(run_config) | set(RESUMABLE_RECORDS)
  diffs, changed = configs.split_differences(io_utils.read_json(path),
                                             configs.jsonable(run_config), allowed,
                                             recorded_label="run dir has")
  if diffs:
    raise ConfigError(
        f"run directory {run_dir} was written by a different config "
        f"({configs.format_differences(diffs)}); use a new --run_dir or the original "
        "settings")
  return [line for line in changed if not line.startswith("loop.run_dir:")]


def _next_boundary(step: int, every: int) -> int:
  return (step // every + 1) * every


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
  return _TrainingRun(task, strategy, config, log, after_steps, eval_hook, retry).run(
      run_config)


class _TrainingRun:
  """One :func:`run_loop` call: lock the run directory, check and record the config, build,
  restore (or init), then host-loop calls, each followed by whichever of the log, summary,
  eval and save steps falls due at its last step."""

  def __init__(self, task: Task, strategy: tf.distribute.Strategy, config: LoopConfig,
               log: Callable[[str], None],
               after_steps: Optional[Callable[[int, Dict[str, float]], None]],
               eval_hook: Optional[Callable[[int], Dict[str, float]]],
               retry: remote_io.RetryPolicy):
    self.task, self.strategy, self.config = task, strategy, config
    self.after_steps, self.eval_hook, self.retry = after_steps, eval_hook, retry
    self.chief = strategy_lib.is_chief(strategy)
    if not self.chief:
      worker = strategy_lib.worker_id(strategy)
      self.log = lambda line: log(f"[worker {worker}] {line}")
    else:
      self.log = log
    self.names = list(task.metric_names)
    self.sync = WorkerSync(strategy)
    self.writes = checkpoints.RetryingWrites(config.run_dir, retry, self.log)
    self.lock: Optional[run_lock.RunLock] = None
    # Set by _run_locked / _train.
    self.preemption: Optional[Preemption] = None
    self.step_var: Optional[tf.Variable] = None
    self.checkpoint: Optional[tf.train.Checkpoint] = None
    self.manager: Optional[tf.train.CheckpointManager] = None
    self.writer = None
    self.saved_path: Optional[str] = None  # newest complete checkpoint (chief's path)
    self.saved_step = 0  # the step it holds

  def run(self, run_config: Optional[Dict[str, Any]]) -> LoopResult:
    self.lock = coordination.lock_run_dir(self.config.run_dir, self.chief, self.sync,
                                          self.config.lock_timeout_s, self.config.steal_lock,
                                          self.retry, self.log)
    try:
      return self._run_locked(run_config)
    finally:
      if self.lock is not None:
        self.lock.release()

  def _run_locked(self, run_config: Optional[Dict[str, Any]]) -> LoopResult:
    run_dir, task, strategy = self.config.run_dir, self.task, self.strategy
    if not self.chief:
      io_utils.ensure_dir(run_dir)
    if run_config is not None:
      for line in check_run_config(run_dir, run_config):
        self.log(f"[resume] changed since the run directory was written: {line}")
      if self.chief:
        configs.write_run_config(run_dir, **run_config)
    step_fn = steps.step_function(task, strategy, self.config.xla, self.log)
    with Preemption(self.config.handle_sigterm) as self.preemption:
      with strategy.scope():
        task.build(strategy)
        self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.checkpoint = tf.train.Checkpoint(step=self.step_var, **task.checkpoint_items())
      self.manager = checkpoints.make_checkpoint_manager(
          self.checkpoint, run_dir, self.config.keep_checkpoints, strategy)
      try:
        return self._train(step_fn)
      finally:
        if not self.chief and tf.io.gfile.exists(self.manager.directory):
          tf.io.gfile.rmtree(self.manager.directory)

  def _restore(self) -> int:
    """Restores the latest checkpoint, or loads the task's init weights; returns the step
    every worker starts from (they must agree)."""
    directory = os.path.join(self.config.run_dir, CHECKPOINT_SUBDIR)
    latest = checkpoints.restore_latest(self.checkpoint, directory, self.log)
    if latest:
      self.log(f"[resume] restored {latest} at step {int(self.step_var.numpy())}")
    else:
      for line in self.task.initialize():
        self.log(f"[init] {line}")
    start_step = int(self.step_var.numpy())
    restored = self.sync.gather(start_step)
    if np.any(restored != start_step):
      raise CheckpointError(
          f"workers restored different steps {sorted(set(restored.tolist()))} from "
          f"{directory}: run_dir must be one directory that all "
          f"workers share (e.g. gs://bucket/run), not a local path on each host")
    self.saved_path, self.saved_step = latest, start_step
    return start_step

  def _train(self, step_fn: Callable) -> LoopResult:
    config, task = self.config, self.task
    start_step = self._restore()
    self.writer = (self.writes.call(lambda: tf.summary.create_file_writer(
        self.writes.summary_dir), self.writes.summary_dir, "TensorBoard summaries")
                   if self.chief else tf.summary.create_noop_writer())
    iterator = iter(self.strategy.distribute_datasets_from_function(
        lambda ctx: task.dataset_fn(ctx, start_step)))
    run_steps = steps.host_loop(self.strategy, step_fn, self.step_var, self.names)
    history: List[Dict[str, float]] = []
    last_metrics: Dict[str, float] = {}
    step = start_step
    if self.chief and start_step == 0:
      self._summarize(0, task.summarize_inputs)
    preempted = False
    progress = Progress(config.total_steps, task.global_batch_size, self.names, step)
    if step >= config.total_steps:
      self.log(f"[done] run already at step {step} >= total_steps {config.total_steps}")
    while step < config.total_steps:
      if self._stop_requested(step):
        preempted = True
        break
      n = self._steps_to_next_event(step)
      metrics = self._run_steps(run_steps, iterator, step, n)
      step += n
      progress.steps_done(step)
      metrics["step"] = step
      history.append(metrics)
      last_metrics = metrics
      if self._due(step, config.log_every):
        self.log(progress.line(step, metrics))
      if self._due(step, config.summary_interval):
        self._summary_step(step, metrics)
      if self.eval_hook is not None and self._due(step, config.eval_every):
        self._eval_step(step, metrics)
      if self._due(step, config.checkpoint_every):
        self._save(step)
      if self.after_steps is not None:
        self.after_steps(step, metrics)
    self._summarize(step, lambda: None)  # flushes
    return LoopResult(final_step=step, resumed_from=start_step, preempted=preempted,
                      last_metrics=last_metrics, history=history,
                      checkpoint_path=self.saved_path)

  def _stop_requested(self, step: int) -> bool:
    """True (after saving ``step``) when any worker got SIGTERM or SIGINT; raises when the
    chief lost the run directory's lock. All workers decide together (a collective), so they save the
    same step."""
    lock = self.lock
    shared = self.sync.gather(int(self.preemption.requested)
                              | 2 * int(lock is not None and lock.lost))
    if np.any(shared & 2):
      raise RunDirLockedError(lock.lost_message() if lock is not None and lock.lost else
                              f"the chief lost the lock on run directory {self.config.run_dir}")
    if not np.any(shared & 1):
      return False
    if step != self.saved_step:
      self._save(step)
    name = self.preemption.signal_name or "SIGTERM"  # another worker's signal: SIGTERM
    self.log(f"[preempted] {name} received: checkpoint {self.saved_path or '(none yet)'} "
             f"holds step {self.saved_step}; run the same command to resume")
    return True

  def _due(self, step: int, every: int) -> bool:
    """Whether an event of cadence ``every`` (0 = only at the end) happens at ``step``."""
    return step == self.config.total_steps or bool(every and step % every == 0)

  def _steps_to_next_event(self, step: int) -> int:
    """Steps until the end, the host-loop length, or the next checkpoint, summary, log or
    eval step, whichever comes first."""
    config = self.config
    boundaries = [config.total_steps, step + config.steps_per_loop,
                  _next_boundary(step, config.checkpoint_every),
                  _next_boundary(step, config.summary_interval),
                  _next_boundary(step, config.log_every)]
    if config.eval_every:
      boundaries.append(_next_boundary(step, config.eval_every))
    return min(boundaries) - step

  def _run_steps(self, run_steps: Callable, iterator, step: int, n: int) -> Dict[str, float]:
    """Trains steps ``step+1 .. step+n``; their mean metrics (the loss must be finite)."""
    try:
      metrics = {k: float(v) for k, v in run_steps(iterator, tf.constant(n)).items()}
    except tf.errors.OpError as e:  # e.g. gs:// training images unreachable mid-run
      error = remote_io.storage_error(e)
      if error is None:
        raise
      raise StorageError(f"{error} (while training steps {step + 1}-{step + n}; the last "
                         f"complete checkpoint {self.saved_path or '(none)'} is kept: run "
                         f"the same command to resume)") from None
    loss = metrics[self.names[0]]
    if not math.isfinite(loss):
      raise TrainingError(
          f"non-finite loss ({loss}) in steps {step + 1}-{step + n} in {self.config.run_dir}; "
          f"the last good checkpoint ({self.saved_path or 'none'}) is untouched. Lower the "
          f"learning rate or check the data")
    return metrics

  def _summary_step(self, step: int, metrics: Dict[str, float]) -> None:
    scalars = {k: metrics[k] for k in self.names}
    scalars.update(self.task.extra_summaries())
    self._summarize(step, lambda: [tf.summary.scalar(k, v) for k, v in scalars.items()])

  def _eval_step(self, step: int, metrics: Dict[str, float]) -> None:
    eval_metrics = self.eval_hook(step)
    if eval_metrics:
      metrics.update(eval_metrics)  # kept in LoopResult.history for reports
      self.log("[eval] step {} {}".format(
          step, " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items())))
      self._summarize(step, lambda: [tf.summary.scalar(f"eval/{k}", v)
                                     for k, v in eval_metrics.items()])

  def _save(self, step: int) -> None:
    self.saved_path = self.writes.save(self.manager, step, self.chief, self.saved_path)
    self.saved_step = step

  def _summarize(self, step: int, write: Callable[[], None]) -> None:
    """``write()``'s summaries at ``step``; when they cannot be written even after the
    retries, saves a checkpoint of this step and stops."""
    try:
      self.writes.summaries(self.writer, step, write)
    except StorageError as e:
      path = (self.saved_path if step == self.saved_step else
              self.writes.save(self.manager, step, self.chief, self.saved_path))
      where = (f"checkpoint {path} holds step {step}: run the same command to resume"
               if path else "nothing trained yet: run the same command again")
      raise StorageError(f"{e} (stopped; {where})") from None
