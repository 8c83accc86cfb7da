"""The training loop's checkpoints: where they live, how a resume finds a readable one, and
saves (and TensorBoard flushes) that survive transient ``gs://`` failures.

Atomicity: TF writes a checkpoint's shards into ``ckpt-N_temp/``, merges them into
``ckpt-N.index``/``ckpt-N.data-*`` and only then rewrites the ``checkpoint`` state file
(write to a temp file + rename), so a crash during a save leaves the state pointing at the
previous, complete checkpoint. On resume, a latest checkpoint that cannot be read is skipped
in favour of the previous one (tests/train/test_preemption.py).

Multi-worker: every worker saves (TF requires it), non-chief workers into a scratch
directory that the loop deletes at the end; only the chief's ``checkpoints/`` is kept.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import tensorflow as tf

from remedis_tf import remote_io
from remedis_tf.errors import CheckpointError, StorageError
from remedis_tf.train import strategy as strategy_lib

CHECKPOINT_SUBDIR = "checkpoints"
SUMMARY_SUBDIR = "train"


def make_checkpoint_manager(checkpoint: tf.train.Checkpoint, run_dir: str, keep: int,
                            strategy: tf.distribute.Strategy) -> tf.train.CheckpointManager:
  """CheckpointManager in ``run_dir/checkpoints``; non-chief workers write to a scratch dir
  (TF requires every worker to save, but only the chief's copy is kept)."""
  directory = os.path.join(run_dir, CHECKPOINT_SUBDIR)
  if not strategy_lib.is_chief(strategy):
    directory = os.path.join(run_dir, f".worker{strategy_lib.worker_id(strategy)}_tmp")
  return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep,
                                    step_counter=None)


def restore_latest(checkpoint: tf.train.Checkpoint, directory: str,
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


class RetryingWrites:
  """Checkpoint saves and summary flushes with bounded retries on ``gs://`` hiccups."""

  def __init__(self, run_dir: str, retry: remote_io.RetryPolicy, log: Callable[[str], None]):
    self.run_dir, self.retry, self.log = run_dir, retry, log
    self.summary_dir = os.path.join(run_dir, SUMMARY_SUBDIR)

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
