"""Two MultiWorkerMirroredStrategy workers on localhost train like one process.

Scenario (each process is tests/train/multi_worker_worker.py):
1. Two workers start contrastive training; worker 1 alone gets SIGTERM (it signals itself
   after step PREEMPT_AT, so the test is deterministic). Both must stop at that SAME step,
   save, print "[preempted]" and exit 0.
2. The same two commands are started again: they resume from that step, finish the
   contrastive stage and run fine-tuning steps initialised from it.
3. A single-process run with the same global batch (run concurrently with step 1) must
   end with the same weights (relative tolerance 1e-4) in both stages.
Only the chief may create summary writers, write config.json or lock the run directory.
"""

import json
import os
import re
import socket
import time

import numpy as np
import tensorflow as tf

from remedis_tf import synthetic
from subprocess_runs import Run, python

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multi_worker_worker.py")
# Few steps: this tiny contrastive problem is chaotic enough that float rounding
# differences between 1 and 2 replicas grow past 1e-4 after ~10 steps.
CONTRASTIVE_STEPS = 6
PREEMPT_AT = 3
FINETUNE_STEPS = 3
HARD_TIMEOUT_S = 360  # only guards against hangs; a loaded 2-core machine needs ~130 s


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(("localhost", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _start_cluster(data, run_root, procs, extra, worker1_extra=()):
  ports = _free_ports(2)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  workers = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    args = [f"--data={data}", f"--run_root={run_root}", "--strategy=multi_worker"] + extra
    proc = Run(f"worker {index}", python(WORKER, *args, *(worker1_extra if index else ())),
               env)
    procs.append(proc)
    workers.append(proc)
  return workers


def _preempted_step(proc):
  found = re.findall(r"\[preempted\].*holds step (\d+)", proc.output())
  assert len(found) == 1, f"{proc.name} did not report one preemption:\n{proc.output()[-3000:]}"
  return int(found[0])


def _model_tensors(run_dir):
  path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  assert path, f"no checkpoint in {run_dir}"
  reader = tf.train.load_checkpoint(path)
  # Every saved value (weights, norm statistics, optimizer slots, step) except the object
  # graph and the save counter (the preempted run saved once more). Many backbone weights
  # appear only under optimizer/_trainable_variables/N: a checkpoint stores each variable
  # once, under the first path that reaches it.
  keys = [k for k in reader.get_variable_to_shape_map()
          if k != "_CHECKPOINTABLE_OBJECT_GRAPH" and not k.startswith("save_counter")]
  return path, {k: reader.get_tensor(k) for k in keys}


def _assert_same_weights(reference_dir, run_dir):
  ref_path, ref = _model_tensors(reference_dir)
  path, got = _model_tensors(run_dir)
  assert os.path.basename(ref_path) == os.path.basename(path)
  assert sorted(ref) == sorted(got)
  assert len(ref) > 50
  for key, expected in ref.items():
    scale = float(np.max(np.abs(expected))) if np.size(expected) else 0.0
    np.testing.assert_allclose(got[key], expected, rtol=1e-4, atol=1e-4 * scale + 1e-7,
                               err_msg=key)


def _assert_chief_only_writes(chief, other, run_root):
  for stage in ("contrastive", "finetune"):
    stage_dir = os.path.join(run_root, stage)
    assert f"[audit] summary writer {os.path.join(stage_dir, 'train')}" in chief.output()
    assert f"[audit] config.json {stage_dir}" in chief.output()
    assert f"[audit] run lock {stage_dir}" in chief.output()  # the chief locks for the job
    assert not os.path.exists(os.path.join(stage_dir, "run.lock"))  # and released it
    assert os.path.exists(os.path.join(stage_dir, "config.json"))
    leftovers = [n for n in os.listdir(stage_dir) if n.startswith(".worker")]
    assert not leftovers, f"non-chief scratch checkpoints left in {stage_dir}: {leftovers}"
  assert "[audit]" not in other.output(), other.output()


def test_two_workers_match_one_process_and_survive_preemption(tmp_path):
  data = str(tmp_path / "data")
  synthetic.generate_benchmark(data, synthetic.SyntheticConfig.quick())
  steps = [f"--contrastive_steps={CONTRASTIVE_STEPS}", f"--finetune_steps={FINETUNE_STEPS}"]
  procs = []
  deadline = time.time() + HARD_TIMEOUT_S
  try:
    reference = Run("reference", python(WORKER, f"--data={data}",
                                        f"--run_root={tmp_path / 'ref'}", "--strategy=default",
                                        *steps))
    procs.append(reference)
    run_root = str(tmp_path / "mw")

    # 1. Preempt worker 1 alone after step PREEMPT_AT; both must stop there together.
    chief, other = _start_cluster(data, run_root, procs, steps,
                                  worker1_extra=[f"--sigterm_self_at={PREEMPT_AT}"])
    assert other.wait(deadline) == 0, other.output()[-3000:]
    assert chief.wait(deadline) == 0, chief.output()[-3000:]
    stop = _preempted_step(chief)
    assert _preempted_step(other) == stop == PREEMPT_AT
    assert "WORKER PREEMPTED" in chief.output() and "WORKER PREEMPTED" in other.output()
    assert tf.train.latest_checkpoint(os.path.join(run_root, "contrastive", "checkpoints")
                                      ).endswith(f"ckpt-{stop}")
    assert "[audit]" not in other.output()

    # 2. Restart both: they resume together and finish both stages.
    chief, other = _start_cluster(data, run_root, procs, steps)
    for proc in (chief, other):
      assert proc.wait(deadline) == 0, proc.output()[-3000:]
      assert "WORKER DONE" in proc.output()
      assert re.search(rf"\[resume\] restored .*ckpt-{stop} at step {stop}\b", proc.output())
    _assert_chief_only_writes(chief, other, run_root)
    for stage in ("contrastive", "finetune"):
      events = tf.io.gfile.glob(os.path.join(run_root, stage, "train", "events.out.*"))
      # One file per chief process that trained the stage (contrastive: 2 launches).
      assert len(events) == (2 if stage == "contrastive" else 1), events

    # 3. Same weights as one process with the same global batch.
    assert reference.wait(deadline) == 0, reference.output()[-3000:]
    for stage in ("contrastive", "finetune"):
      _assert_same_weights(str(tmp_path / "ref" / stage), os.path.join(run_root, stage))
  finally:
    for proc in procs:
      proc.kill()
