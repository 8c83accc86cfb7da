"""pretrain_contrastive's epochs → steps accounting (flags parsed in a subprocess, as each
binary defines its own flags)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = r"""
import json, sys
from absl.flags import FLAGS
from experiments import pretrain_contrastive as binary
from remedis_tf.data.manifest import Manifest, Record
# 8 cases x 3 images = 24 images (paths are never read here).
records = tuple(Record(f"/nowhere/{c}_{j}.png", f"{c}_{j}", (), (), patient_id=f"case{c}")
                for c in range(8) for j in range(3))
for args in sys.argv[1:]:
  FLAGS.unparse_flags()
  FLAGS(["prog", "--run_dir=unused"] + args.split())
  total, opt = binary.steps_and_optimizer(Manifest(records, (), "unlabelled", "mem"))
  print(json.dumps({"total": total, "opt_total": opt.total_steps, "warmup": opt.warmup_steps}))
"""


def _plan(*flag_sets):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, *flag_sets], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return [json.loads(line) for line in proc.stdout.strip().splitlines()[-len(flag_sets):]]


def test_micle_epochs_and_warmup_count_cases_not_images():
  """Regression: with --micle, 3 epochs of 8 cases at batch 4 must be 6 steps (warmup 1
  epoch = 2 steps); counting the 24 images gave 18 and 6."""
  common = "--batch_size=4 --train_epochs=3 --warmup_epochs=1"
  micle, plain = _plan("--micle " + common, "--nomicle " + common)
  assert micle == {"total": 6, "opt_total": 6, "warmup": 2}
  assert plain == {"total": 18, "opt_total": 18, "warmup": 6}
