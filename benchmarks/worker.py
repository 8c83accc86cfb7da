"""A long-lived train-step process for alternating timings: ``python -m benchmarks.worker SPEC``.

SPEC is a JSON dict with ``program`` (``ours``: remedis_tf's real train step, as in
:func:`benchmarks.measure.make_train_step`; ``pytorch``: :mod:`benchmarks.peer`) and the
step's parameters. Protocol on stdin/stdout, one line each:

* after building the model, tracing and ``warmup`` steps: ``READY <json>`` (setup
  seconds, versions);
* ``RUN k`` → runs k steps, answers ``TIMES <json list of seconds per step>``;
* ``QUIT`` (or end of input) → exits.

Keeping both programs alive and telling them in turn to run a few steps lets
:mod:`benchmarks.run` alternate them without paying process start-up between rounds,
while only one of them computes at any time.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _ours(spec):
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  one_step, losses, _, _ = measure.make_train_step({**spec, "device": "cpu"})
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  info = {"framework": "tensorflow", "tf": tf.__version__,
          "model": f"remedis_tf ResNetV2 {spec['variant']}"}
  return one_step, lambda: bool(np.all(np.isfinite(losses))), info


def _pytorch(spec):
  # torch/timm are an optional extra: imported only in this process.
  from benchmarks import peer  # pylint: disable=g-import-not-at-top
  step = peer.build_step(spec)
  losses = []
  return (lambda: losses.append(step())), lambda: bool(np.all(np.isfinite(losses))), \
      peer.describe()


def main(argv) -> int:
  spec = json.loads(argv[1])
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  t0 = time.perf_counter()
  one_step, finite, info = {"ours": _ours, "pytorch": _pytorch}[spec["program"]](spec)
  for _ in range(spec.get("warmup", 1)):
    one_step()
  print("READY " + json.dumps({**info, "setup_s": time.perf_counter() - t0}), flush=True)
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "QUIT":
      break
    times = []
    for _ in range(int(cmd[1])):
      start = time.perf_counter()
      one_step()
      times.append(time.perf_counter() - start)
    print("TIMES " + json.dumps({"times": times, "finite_loss": finite()}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
