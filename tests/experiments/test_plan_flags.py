"""The binaries' HyperRule planning from flags (experiments/common_flags.py → plan_finetune),
including a TFRecord training set with --image_size=0 (it used to need --image_min_side)."""

import json
import os
import subprocess
import sys

from remedis_tf.data import tfrecords
from tests.eval.tiny_data import brightness_set

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Parses the finetune binary's flags and prints what it would plan, without training.
_PLAN = r"""
import json, sys
from absl import flags
from experiments import common_flags, data_flags, finetune
FLAGS = flags.FLAGS
FLAGS(["finetune"] + sys.argv[1:])
train = data_flags.manifest_from_flags("train_")
side = common_flags.image_side_from_flags(train)
plan = common_flags.supervised_plan(len(train), side)
print(json.dumps({"side": side, **{k: list(v) if isinstance(v, tuple) else v
                                   for k, v in plan.items()}}))
"""


def _plan(*args):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  proc = subprocess.run([sys.executable, "-c", _PLAN, "--run_dir=/unused", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_hyperrule_plan_of_a_tfrecord_set_reads_the_stored_image_size(tmp_path):
  manifest, _ = brightness_set(str(tmp_path), "train", num_patients=6, size=40)
  prefix = os.path.join(tmp_path, "shards", "train")
  tfrecords.write_tfrecords(manifest, prefix, num_shards=2, num_workers=1)
  plan = _plan("--train_source=tfrecords", f"--train_tfrecords={prefix}", "--image_size=0",
               "--lr_schedule=bit_hyperrule", "--hyperrule_step_scale=0.1", "--batch_size=4")
  # 40x40 sources are under 96x96 → crop 128; 12 examples → the < 20k row (steps at batch
  # 512), scaled by 0.1 and by 512 / 4 for batch 4.
  assert plan == {"side": 40, "total_steps": 6400,
                  "boundaries": [1280, 2560, 3840, 5120, 6400],
                  "image_size": 128, "mixup_alpha": 0.0}
  fixed = _plan("--train_source=tfrecords", f"--train_tfrecords={prefix}", "--image_size=64",
                "--lr_schedule=bit_hyperrule", "--train_steps=10", "--mixup_alpha=0.2")
  assert fixed == {"side": 0, "total_steps": 10, "boundaries": [2, 4, 6, 8, 10],
                   "image_size": 64, "mixup_alpha": 0.2}
