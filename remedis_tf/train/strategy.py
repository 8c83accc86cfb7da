"""Choosing a ``tf.distribute`` strategy and the precision policy by name.

Names: ``default`` (one device), ``mirrored`` (all local GPUs, or N logical CPU devices),
``multi_worker`` (``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``), ``tpu``
(``--tpu=local`` on a TPU VM, or a TPU name / grpc address).
"""

from __future__ import annotations

import json
import os
from typing import Optional

import keras
import tensorflow as tf

from remedis_tf.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "bfloat16", "float16")


def configure_cpu_devices(num_devices: int) -> None:
  """Splits the host CPU into ``num_devices`` logical devices (must run before TF starts).

  A no-op when the split is already in place; ConfigError when TF was initialised with a
  different split.
  """
  if num_devices <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError:
    have = len(tf.config.list_logical_devices("CPU"))
    if have < num_devices:
      raise ConfigError(
          f"cannot split the CPU into {num_devices} devices after TensorFlow started "
          f"(has {have}); create the strategy before running any TF op") from None


def make_strategy(name: str = "default", tpu: Optional[str] = None,
                  num_cpu_devices: int = 0) -> tf.distribute.Strategy:
  """Returns the strategy called ``name``.

  Args:
    name: one of STRATEGIES.
    tpu: for ``tpu``: ``"local"`` on a TPU VM, else a TPU name or ``grpc://`` address.
    num_cpu_devices: for ``mirrored`` on a machine without GPUs, the number of logical
      CPU devices to mirror over (testing multi-replica code on CPU); 0 = all GPUs, or
      the single CPU when there are none.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    if gpus and not num_cpu_devices:
      return tf.distribute.MirroredStrategy()
    n = max(num_cpu_devices, 1)
    configure_cpu_devices(n)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:n]]
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                        "(cluster spec + this worker's task); see docs/tpu.md")
    try:
      json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as e:
      raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    if not tpu:
      raise ConfigError("--strategy=tpu needs --tpu (\"local\" on a TPU VM, or a TPU name)")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    if tpu != "local":
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def set_precision(precision: str) -> str:
  """Sets Keras' global dtype policy: float32, bfloat16 (mixed) or float16 (mixed).

  Returns the policy name. Norm statistics and losses stay float32 in every case.
  """
  policies = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
  if precision not in policies:
    raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
  keras.mixed_precision.set_global_policy(policies[precision])
  return policies[precision]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the worker that writes summaries and exports (always true off multi-worker)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type is None or task_type == "chief" or (
      task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs)


def worker_id(strategy: tf.distribute.Strategy) -> int:
  """This worker's index (0 off multi-worker)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 0
  return int(resolver.task_id or 0)
