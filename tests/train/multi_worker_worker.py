"""One training process for tests/train/test_multi_worker.py.

Runs contrastive steps and then fine-tuning steps (initialised from the contrastive run)
on the quick synthetic benchmark, with the tiny backbone at 32 px and a global batch of 8.
Started twice with ``--strategy=multi_worker`` (each with its own ``TF_CONFIG``), or once
with ``--strategy=default`` for the single-process reference.

Output the test reads: ``[audit] summary writer <dir>`` / ``[audit] config.json <dir>`` /
``[audit] run lock <dir>`` whenever this process creates a summary file writer, writes
config.json or locks a run directory (only the chief may), the loop's own ``[train]`` / ``[preempted]`` / ``[resume]`` lines, and
``WORKER DONE`` (or ``WORKER PREEMPTED``) at a clean end. ``--sigterm_self_at=K`` makes the
process send itself SIGTERM right after contrastive step K (a preemption of this worker
alone, at a known step).

  python tests/train/multi_worker_worker.py --data=DIR --run_root=DIR --strategy=multi_worker
"""

import argparse
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

import tensorflow as tf  # noqa: E402

from remedis_tf import configs, run_lock, synthetic  # noqa: E402
from remedis_tf.data import augment as augment_lib  # noqa: E402
from remedis_tf.data import recipes  # noqa: E402
from remedis_tf.optim.factory import OptimizerConfig  # noqa: E402
from remedis_tf.runs import stages  # noqa: E402
from remedis_tf.train.contrastive import ContrastiveConfig  # noqa: E402
from remedis_tf.train.loop import LoopConfig  # noqa: E402
from remedis_tf.train.supervised import SupervisedConfig  # noqa: E402

IMAGE_SIZE = 32
GLOBAL_BATCH = 8


def _audit_writes():
  """Prints a line whenever summaries or config.json are written, or the run directory
  is locked, by this process."""
  create_writer = tf.summary.create_file_writer
  write_config = configs.write_run_config

  def audited_writer(logdir, *args, **kwargs):
    print(f"[audit] summary writer {logdir}", flush=True)
    return create_writer(logdir, *args, **kwargs)

  def audited_config(run_dir, **sections):
    print(f"[audit] config.json {run_dir}", flush=True)
    return write_config(run_dir, **sections)

  acquire_lock = run_lock.RunLock.acquire

  def audited_lock(lock):
    print(f"[audit] run lock {lock.run_dir}", flush=True)
    return acquire_lock(lock)

  tf.summary.create_file_writer = audited_writer
  configs.write_run_config = audited_config
  run_lock.RunLock.acquire = audited_lock


def _sigterm_at(step_to_signal):
  """An after_steps hook that signals this process once it has trained that step."""
  def hook(step, metrics):
    del metrics
    if step == step_to_signal:
      os.kill(os.getpid(), signal.SIGTERM)
  return hook


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data", required=True, help="quick synthetic benchmark folder")
  parser.add_argument("--run_root", required=True, help="holds contrastive/ and finetune/")
  parser.add_argument("--strategy", default="default", help="default or multi_worker")
  parser.add_argument("--contrastive_steps", type=int, default=3)
  parser.add_argument("--finetune_steps", type=int, default=3)
  parser.add_argument("--sigterm_self_at", type=int, default=0,
                      help="send this process SIGTERM after this contrastive step (0 = never)")
  args = parser.parse_args()
  _audit_writes()

  csv = synthetic.generate_benchmark(args.data, synthetic.SyntheticConfig.quick())["csv"]
  runtime = stages.RuntimeConfig(strategy=args.strategy)
  log = lambda line: print(line, flush=True)

  unlabelled = recipes.chexpert(csv["site_a/unlabelled"], data_root=args.data,
                                label_columns=())
  contrastive_dir = os.path.join(args.run_root, "contrastive")
  result = stages.run_contrastive(
      unlabelled,
      ContrastiveConfig(variant="tiny", global_batch_size=GLOBAL_BATCH, seed=3),
      OptimizerConfig(name="lars", base_lr=0.05, warmup_steps=2, total_steps=100),
      augment_lib.get_preset("generic", image_size=IMAGE_SIZE),
      LoopConfig(run_dir=contrastive_dir, total_steps=args.contrastive_steps,
                 steps_per_loop=1, checkpoint_every=5, summary_every=2, log_every=1),
      runtime, log=log, after_steps=_sigterm_at(args.sigterm_self_at))
  if result.preempted:
    print("WORKER PREEMPTED", flush=True)
    return

  # MixUp is off: its λ and partners are drawn per replica, so it is (by design, as in
  # BiT) not topology-independent; tests/train/test_xla.py covers it.
  labelled = recipes.chexpert(csv["site_a/train"], data_root=args.data,
                              label_columns=synthetic.FINDINGS)
  result = stages.run_supervised(
      labelled,
      SupervisedConfig(variant="tiny", global_batch_size=GLOBAL_BATCH, mixup_alpha=0.0,
                       init=contrastive_dir, seed=5),
      OptimizerConfig(name="sgd", base_lr=0.01, schedule="constant", total_steps=100),
      augment_lib.get_preset("generic", image_size=IMAGE_SIZE), IMAGE_SIZE,
      LoopConfig(run_dir=os.path.join(args.run_root, "finetune"),
                 total_steps=args.finetune_steps, steps_per_loop=2, checkpoint_every=2,
                 summary_every=1, log_every=1),
      runtime, log=log)
  print("WORKER PREEMPTED" if result.preempted else "WORKER DONE", flush=True)


if __name__ == "__main__":
  main()
