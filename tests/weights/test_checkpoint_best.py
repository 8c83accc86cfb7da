"""A fine-tuned run directory as an init restores its best/ checkpoint (model selection)."""

import os

import tensorflow as tf

from remedis_tf.weights import checkpoint_io


def _save(directory, value, number):
  v = tf.Variable(value)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=v), directory, max_to_keep=1)
  return manager.save(checkpoint_number=number)


def test_run_dir_resolves_best_before_latest(tmp_path):
  run = str(tmp_path / "run")
  latest = _save(os.path.join(run, "checkpoints"), 2.0, 40)
  assert checkpoint_io.resolve_checkpoint(run) == latest
  best = _save(os.path.join(run, "best"), 1.0, 20)
  assert checkpoint_io.resolve_checkpoint(run) == best
  # Asking for the latest weights: name the checkpoints folder.
  assert checkpoint_io.resolve_checkpoint(os.path.join(run, "checkpoints")) == latest
