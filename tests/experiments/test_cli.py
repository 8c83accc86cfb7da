"""experiments/_cli.py: gs:// flag values are stat-ed before main runs, and a remote-storage
failure raised later (mid-run) is still one line and exit 2."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import flags

from experiments import _cli
from remedis_tf.errors import StorageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _flag_values(**values):
  fv = flags.FlagValues()
  for name in ("input", "run_dir", "train_csv", "output_prefix"):
    flags.DEFINE_string(name, None, "test flag", flag_values=fv)
  flags.DEFINE_multi_string("eval_set", None, "test flag", flag_values=fv)
  flags.DEFINE_integer("steps", 0, "test flag", flag_values=fv)
  fv(["prog"] + [f"--{k}={v}" for k, vs in values.items()
                 for v in (vs if isinstance(vs, list) else [vs])])
  return fv


def test_remote_flag_paths_finds_every_gs_value():
  fv = _flag_values(input="/local/w.npz", run_dir="gs://b/run", steps=3,
                    eval_set=["test=csv:gs://b/test.csv", "local=/x.csv", "ood=gs://b/o.csv"])
  assert _cli.remote_flag_paths(fv) == {"--run_dir": "gs://b/run",
                                        "--eval_set": "gs://b/test.csv",
                                        "--eval_set[1]": "gs://b/o.csv"}


def test_missing_remote_input_is_named_but_a_new_output_is_fine(monkeypatch):
  monkeypatch.setattr(tf.io.gfile, "exists", lambda path: False)
  _cli.check_remote_flags(_flag_values(run_dir="gs://b/new", output_prefix="gs://b/shards"))
  with pytest.raises(StorageError, match="--train_csv gs://b/train.csv does not exist"):
    _cli.check_remote_flags(_flag_values(train_csv="gs://b/train.csv", run_dir="gs://b/new"))


_MID_RUN = r'''
import tensorflow as tf
from experiments import _cli
def main(argv):
  print("working", flush=True)
  raise tf.errors.PermissionDeniedError(None, None, "Error executing an HTTP request: HTTP "
      "response code 403 with body 'denied' when uploading gs://b/run/checkpoints/ckpt-7")
_cli.run_main(main)
'''


def test_storage_failure_during_the_run_is_one_line_exit_2():
  proc = subprocess.run([sys.executable, "-c", _MID_RUN], cwd=ROOT, capture_output=True,
                        text=True, env=dict(os.environ, PYTHONPATH=ROOT,
                                            TF_CPP_MIN_LOG_LEVEL="3"), timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stdout.strip() == "working"
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: permission denied for gs://b/run/checkpoints/ckpt-7 "), last
  assert "roles/storage.objectAdmin" in last and "Traceback" not in proc.stderr
