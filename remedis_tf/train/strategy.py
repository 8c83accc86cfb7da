"""Choosing a ``tf.distribute`` strategy and the precision policy by name.

Names: ``default`` (one device), ``mirrored`` (all local GPUs, or N logical CPU devices),
``multi_worker`` (``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``; one instance per
process, collectives picked automatically: NCCL between GPUs, ring all-reduce over gRPC on
CPU), ``tpu`` (``--tpu=local`` on a TPU VM, or a TPU name / grpc address).
See docs/tpu.md for cluster set-up.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

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


def _fresh_collective_keys() -> None:
  """Moves MirroredStrategy's collective-key base past every key used so far.

  Strategies created in one process share the collective executor; a second one would
  reuse the first one's instance keys and its all-reduces abort ("Collective instance 100
  expected type ...", tensorflow#62790), e.g. when a sweep trains several cells in one
  process. TF's own tests bump this private counter the same way.
  """
  if hasattr(tf.distribute.MirroredStrategy, "_collective_key_base"):
    tf.distribute.MirroredStrategy._collective_key_base += 100000  # pylint: disable=protected-access


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
      _fresh_collective_keys()
      return tf.distribute.MirroredStrategy()
    n = max(num_cpu_devices, 1)
    configure_cpu_devices(n)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:n]]
    _fresh_collective_keys()
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multi_worker":
    return _multi_worker_strategy()
  if name == "tpu":
    if not tpu:
      raise ConfigError("--strategy=tpu needs --tpu (\"local\" on a TPU VM, or a TPU name)")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    if tpu != "local":
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


# One MultiWorkerMirroredStrategy per process and TF_CONFIG: creating a second one restarts
# collective ops, which breaks tensors made before (e.g. when the demo runs two stages).
_MULTI_WORKER: Dict[str, tf.distribute.MultiWorkerMirroredStrategy] = {}


def _check_tf_config(raw: Optional[str]) -> None:
  if raw is None:
    raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                      "(cluster spec + this worker's task); see docs/tpu.md")
  try:
    spec = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
  if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict):
    raise ConfigError("TF_CONFIG has no \"cluster\" object (e.g. {\"cluster\": {\"worker\": "
                      "[\"host1:port\", \"host2:port\"]}, \"task\": {\"type\": \"worker\", "
                      "\"index\": 0}})")
  task = spec.get("task")
  if not isinstance(task, dict) or "type" not in task or "index" not in task:
    raise ConfigError("TF_CONFIG has no \"task\" with \"type\" and \"index\" (this "
                      "worker's place in the cluster)")
  members = spec["cluster"].get(task["type"])
  if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
    raise ConfigError(f"TF_CONFIG task {task['type']}:{task['index']} is not in its cluster "
                      f"{json.dumps(spec['cluster'])}")


def _multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
  raw = os.environ.get("TF_CONFIG")
  _check_tf_config(raw)
  if raw not in _MULTI_WORKER:
    _MULTI_WORKER[raw] = tf.distribute.MultiWorkerMirroredStrategy()
  return _MULTI_WORKER[raw]


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


def num_workers(strategy: tf.distribute.Strategy) -> int:
  """Processes taking part in the run (>1 only for multi-worker MWMS clusters)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 1
  jobs = resolver.cluster_spec().as_dict()
  return max(1, sum(len(jobs.get(job, ())) for job in ("chief", "worker")))


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
  """True for TPUStrategy (every step is compiled by XLA anyway)."""
  return isinstance(strategy, (tf.distribute.TPUStrategy,
                               tf.distribute.experimental.TPUStrategy))
