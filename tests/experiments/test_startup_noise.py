"""What a binary prints on stderr: no TensorFlow start-up lines (they come back with
--tf_log_level=0), and a config error names the flag (--image_size, not AugmentConfig)."""

import os
import subprocess
import sys

from experiments import _startup
from tests.eval.tiny_data import brightness_set

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _startup_lines(text):
  return [line for line in text.splitlines() if _startup.STARTUP_LINE.match(line)]


def test_binaries_print_no_startup_lines_and_name_the_flag(tmp_path):
  root = str(tmp_path)
  _, csv_path = brightness_set(root, "train", 2)
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # a user who did not source scripts/bootstrap.sh
  finetune = [sys.executable, "-m", "experiments.finetune"]
  bad_size = ["--train_source=csv", f"--train_csv={csv_path}", f"--train_data_root={root}",
              "--train_label_columns=Bright", "--train_patient_column=Patient",
              "--image_size=-32", "--train_steps=5", "--batch_size=2",
              f"--run_dir={os.path.join(root, 'run')}"]
  commands = {
      "help": finetune + ["--helpfull"],
      "error": finetune + bad_size,
      "verbose": finetune + bad_size + ["--tf_log_level=0"],
      # What TensorFlow itself prints on this machine when imported and asked for a GPU.
      "bare": [sys.executable, "-c",
               "import tensorflow as tf; tf.config.list_physical_devices('GPU')"],
  }
  procs = {name: subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
           for name, cmd in commands.items()}
  out = {name: proc.communicate(timeout=300) + (proc.returncode,)
         for name, proc in procs.items()}

  _, err, code = out["help"]
  assert code == 0 and not _startup_lines(err), err
  _, err, code = out["error"]
  # Exactly one line: the error, naming the flag the user typed.
  assert code == 2 and err.strip().splitlines() == [
      "error: --image_size=-32: must be an integer >= 8"], err
  _, err, code = out["verbose"]
  assert code == 2 and err.strip().splitlines()[-1].startswith("error: --image_size=-32")
  bare = _startup_lines(out["bare"][1])
  if bare:  # a machine where TensorFlow has start-up lines: --tf_log_level=0 shows them
    def kinds(lines):  # the C++ source file of each line: cudart_stub.cc, cuda_platform.cc
      return {line.split("]")[0].split()[-1].split(":")[0] for line in lines if "]" in line}

    assert kinds(bare) <= kinds(_startup_lines(err)), (out["bare"][1], err)


def test_tf_log_level_is_read_from_the_command_line_and_flagfiles(tmp_path):
  flagfile = tmp_path / "run.flags"
  flagfile.write_text("# comment\n--tf_log_level=1\n")
  assert _startup.requested_level(["x", "--tf_log_level=0"]) == "0"
  assert _startup.requested_level(["x", "--tf_log_level", "3"]) == "3"
  assert _startup.requested_level(["x", f"--flagfile={flagfile}"]) == "1"
  assert _startup.requested_level(["x", f"--flagfile={flagfile}", "--tf_log_level=0"]) == "0"
  assert _startup.requested_level(["x", "--tf_log_level=9"]) is None  # absl refuses it
  assert _startup.requested_level(["x", "--other=1"]) is None
