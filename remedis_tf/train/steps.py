"""How the loop's training steps are compiled and run on the devices: the per-replica step
(XLA-compiled when asked and possible) and the host loop that runs n of them in one
``tf.function`` call (what TPUs need: one host round trip per call, not per step)."""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from remedis_tf.errors import ConfigError
from remedis_tf.train import strategy as strategy_lib
from remedis_tf.train.task_base import Task


def step_function(task: Task, strategy: tf.distribute.Strategy, xla: bool,
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


def host_loop(strategy: tf.distribute.Strategy, step_fn: Callable, step_var: tf.Variable,
              names: Sequence[str]) -> Callable:
  """``run_steps(iterator, n)``: runs ``step_fn`` on every replica for n batches of
  ``iterator`` (the step argument counts up from ``step_var``), then advances ``step_var``
  by n; returns each metric in ``names`` averaged over replicas and the n steps."""
  names = list(names)

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
  return run_steps
