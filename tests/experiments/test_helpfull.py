"""Every binary explains every flag: --helpfull prints each flag with help text, exit 0."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARIES = ("convert_weights", "make_tfrecords", "pretrain_supervised",
            "pretrain_contrastive", "finetune", "evaluate", "data_efficiency", "embed",
            "demo", "frozen_eval")


def test_helpfull_lists_documented_flags_for_every_binary():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  procs = {name: subprocess.Popen([sys.executable, "-m", f"experiments.{name}", "--helpfull"],
                                  cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
           for name in BINARIES}
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (name, err[-2000:])
    section = out.split(f"experiments/{name}.py:")[-1] if f"{name}.py:" in out else out
    own = re.findall(r"^  --(?:\[no\])?(\w+): (.*)$", section, flags=re.M)
    assert len(own) >= 3, name
    for flag, text in own:
      assert len(text.strip()) >= 10, f"{name} --{flag} has no real help text"
