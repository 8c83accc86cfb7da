"""Two MultiWorkerMirroredStrategy workers on localhost train like one process.

Scenario (each process is tests/train/multi_worker_worker.py):
1. Two workers start contrastive training; worker 1 alone gets SIGTERM (it signals itself
   after step PREEMPT_AT, so the test is deterministic). Both must stop at that SAME step,
   save, print "[preempted]" and exit 0.
2. The same two commands are started again: they resume from that step, finish the
   contrastive stage and run fine-tuning steps initialised from it.
3. A single-process run with the same global batch (run concurrently with step 1) must
   follow the same trajectory (loss per step) and end with the same weights, up to a small
   fraction of one update, in both stages (see the tolerances below).
Only the chief may create summary writers, write config.json or lock the run directory.
"""

import json
import os
import re
import socket
import time

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf import synthetic
from subprocess_runs import Run, python

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

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


def _checkpoint_tensors(path):
  reader = tf.train.load_checkpoint(path)
  # Every saved value (weights, norm statistics, optimizer slots, step) except the object
  # graph and the save counter (the preempted run saved once more). Many backbone weights
  # appear only under optimizer/_trainable_variables/N: a checkpoint stores each variable
  # once, under the first path that reaches it.
  keys = [k for k in reader.get_variable_to_shape_map()
          if k != "_CHECKPOINTABLE_OBJECT_GRAPH" and not k.startswith("save_counter")]
  return {k: reader.get_tensor(k) for k in keys}


def _checkpoints(run_dir):
  """The last two checkpoints of a run: (path, tensors) of the final one, tensors of the one
  before (one loop's update earlier)."""
  state = tf.train.get_checkpoint_state(os.path.join(run_dir, "checkpoints"))
  assert state and len(state.all_model_checkpoint_paths) >= 2, f"checkpoints in {run_dir}"
  previous, last = state.all_model_checkpoint_paths[-2:]
  return last, _checkpoint_tensors(last), _checkpoint_tensors(previous)


def _norm(arrays):
  return float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))


# Tolerances (docs/testing.md). Two workers and one process compute the same function but
# not the same bits: the all-reduce adds the two workers' partial gradients (and the
# synchronised BatchNorm's partial moments), one process sums the global batch in one
# kernel, so every gradient carries a different ~eps-relative rounding of a sum of
# per-example terms. Where those terms cancel (a bias whose shift the following BatchNorm
# removes has a mathematically ~0 gradient) the result is rounding noise, and where a ReLU
# input sits within rounding of 0 the two runs take different branches for that element.
# Either way a momentum slot element can differ by O(1) *relative* while being tiny against
# the slots' scale: issue 25's Intel AMX run saw 8.01e-05 against 4.93e-05 in 4 of 256
# elements of one slot whose largest element was ~6e-4 (the rest agreed to 1e-4), i.e. a
# local ~5%-of-scale difference, not a diverging trajectory. So slots are compared against
# the slots' scale, weights against the size of one update, and the trajectory by its loss
# per step; never element by element with a small rtol.
# Measured (AMD EPYC AVX2, loaded 2-core machine, 2026-12-03): per-step losses identical to
# the printed 4 decimals; weights: max |diff| / max |last update| = 4.0e-06 (contrastive),
# 5.5e-04 (fine-tuning: the 2.4e-07 carried over from the contrastive stage against a small
# SGD step), norm ratios 7.4e-07 and 1.9e-04; slots: max ratio 4.0e-06 and 9.1e-07, norm
# ratios 3.1e-06 and 8.1e-07. The bounds below leave >= 500x above that and >= 5x above
# issue 25's local slot difference, and still fail a real error: a gradient not averaged
# over the workers, or a loss scaled by the worker count, moves every weight by a whole
# update (ratio ~1).
LOSS_ATOL = 1e-3        # losses are printed to 4 decimals (quantum 1e-4): 10x the quantum
NORM_RATIO = 0.1        # ||w_2workers - w_1process|| <= 0.1 * ||one update||, per state kind
ELEMENT_RATIO = 0.5     # and no element off by more than half the largest update / slot


def _assert_same_weights(reference_dir, run_dir):
  """Two workers end where one process ends, measured against how far one update moves
  (weights, norm statistics) or against the slots' own scale (optimizer slots)."""
  ref_path, ref, ref_before = _checkpoints(reference_dir)
  path, got, _ = _checkpoints(run_dir)
  assert os.path.basename(ref_path) == os.path.basename(path)
  assert sorted(ref) == sorted(got)
  assert len(ref) > 50
  floats = [k for k in ref if np.issubdtype(ref[k].dtype, np.floating)]
  for key in set(ref) - set(floats):  # step counters: exact
    np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
  slots = [k for k in floats if k.startswith("optimizer/_variables/")]
  state = [k for k in floats if k not in slots]
  assert len(slots) > 20 and len(state) > 20
  update = {k: ref[k] - ref_before[k] for k in state}
  slot_scale = {k: ref[k] for k in slots}
  for keys, scale, what in ((state, update, "one update"), (slots, slot_scale, "slot scale")):
    scale_max = max(float(np.max(np.abs(v))) for v in scale.values() if v.size)
    scale_norm = _norm(scale.values())
    assert scale_max > 0, f"{what} is 0 in {reference_dir}"
    diff_norm = _norm([got[k] - ref[k] for k in keys])
    assert diff_norm <= NORM_RATIO * scale_norm, (
        f"{run_dir}: ||diff|| {diff_norm:.3g} > {NORM_RATIO} * ||{what}|| {scale_norm:.3g}")
    for key in keys:
      if ref[key].size:
        diff_max = float(np.max(np.abs(got[key] - ref[key])))
        assert diff_max <= ELEMENT_RATIO * scale_max, (
            f"{key}: max |diff| {diff_max:.3g} > {ELEMENT_RATIO} * max |{what}| "
            f"{scale_max:.3g}")


def _losses(*outputs):
  """{(total_steps, step): loss} from the ``[train]`` lines (printed to 4 decimals)."""
  found = {}
  for out in outputs:
    for step, total, metrics in re.findall(r"\[train\] step (\d+)/(\d+) (.*?) \|", out):
      found[(int(total), int(step))] = float(re.search(r"\bloss (\S+)", metrics).group(1))
  return found


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
    first_chief = chief
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

    # 3. Same trajectory and weights as one process with the same global batch.
    assert reference.wait(deadline) == 0, reference.output()[-3000:]
    ref_losses = _losses(reference.output())
    mw_losses = _losses(first_chief.output(), chief.output())
    every_step = ({(CONTRASTIVE_STEPS, s) for s in range(1, CONTRASTIVE_STEPS + 1)} |
                  {(FINETUNE_STEPS, s) for s in range(1, FINETUNE_STEPS + 1)})
    assert set(ref_losses) == set(mw_losses) == every_step, (ref_losses, mw_losses)
    for key, loss in mw_losses.items():
      assert abs(loss - ref_losses[key]) <= LOSS_ATOL, (key, loss, ref_losses[key])
    for stage in ("contrastive", "finetune"):
      _assert_same_weights(str(tmp_path / "ref" / stage), os.path.join(run_root, stage))
  finally:
    for proc in procs:
      proc.kill()
