"""A new user's retries through the finetune binary (issue 19, bugs 3 and 4):

* ``--train_skip_bad_examples`` skips a damaged PNG (valid header, 200 flipped bytes in its
  image data) with the default ``--train_validate=header``, with a logged count;
* a run retried after a bad file is dropped (fewer examples) resumes and says what changed;
* a finished run extended with a larger ``--train_steps`` and the default HyperRule
  schedule resumes, although its schedule boundaries move.
"""

import json
import os
import re
import struct
import sys

import numpy as np

from conftest import FINETUNE, run_binary

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "data"))
import image_files as F  # noqa: E402  pylint: disable=wrong-import-position

# FINETUNE without its constant schedule and step count: these tests set their own.
BASE = tuple(f for f in FINETUNE if not f.startswith(("--lr_schedule", "--train_steps")))


def _damaged_png(rng) -> bytes:
  """A PNG whose signature and chunk headers are intact but with 200 bytes of its IDAT
  data flipped."""
  data = bytearray(F.png_bytes(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)))
  idat = data.find(b"IDAT")
  length = struct.unpack(">I", data[idat - 4:idat])[0]
  assert length > 260
  start = idat + 4 + 40
  for i in range(start, start + 200):
    data[i] ^= 0xFF
  return bytes(data)


def _data(root, num_good=8, damaged=False):
  os.makedirs(os.path.join(root, "img"), exist_ok=True)
  rng = np.random.default_rng(0)
  rows = ["Path,Patient,A,B"]
  for i in range(num_good):
    F.write(os.path.join(root, "img", f"{i}.png"),
            F.png_bytes(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)))
    rows.append(f"img/{i}.png,p{i},{i % 2},{(i // 2) % 2}")
  if damaged:
    F.write(os.path.join(root, "img", "damaged.png"), _damaged_png(rng))
    rows.append("img/damaged.png,px,1,0")
  csv = os.path.join(root, "train.csv")  # a retry edits the same CSV
  with open(csv, "w") as f:
    f.write("\n".join(rows) + "\n")
  return csv


def _finetune(csv, run_dir, *flags):
  return run_binary("finetune", *BASE, f"--train_csv={csv}", f"--run_dir={run_dir}", *flags)


def test_skip_bad_examples_skips_a_damaged_png_without_validate_decode(tmp_path):
  csv = _data(str(tmp_path), damaged=True)
  result = _finetune(csv, str(tmp_path / "run"), "--train_skip_bad_examples",
                     "--lr_schedule=constant", "--train_steps=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert re.search(r"skipped 1 of 9 images .*\n\s+\S*damaged\.png \(row \d+\)",
                   result.stdout), result.stdout
  assert "[finished] step 2" in result.stdout


def test_retry_with_fewer_examples_resumes_and_says_so(tmp_path):
  run_dir = str(tmp_path / "run")
  first = _finetune(_data(str(tmp_path), num_good=9), run_dir, "--lr_schedule=constant",
                    "--train_steps=2")
  assert first.returncode == 0, first.stderr[-3000:]
  retry = _finetune(_data(str(tmp_path), num_good=8), run_dir, "--lr_schedule=constant",
                    "--train_steps=3")
  assert retry.returncode == 0, retry.stderr[-3000:]
  assert re.search(r"\[resume\] changed since the run directory was written: "
                   r"data\.num_examples: run dir has 9, now 8", retry.stdout), retry.stdout
  assert "[resume] restored" in retry.stdout and "[finished] step 3" in retry.stdout


def test_extending_a_finished_hyperrule_run_resumes(tmp_path):
  csv = _data(str(tmp_path))
  run_dir = str(tmp_path / "run")
  first = _finetune(csv, run_dir, "--train_steps=5")
  assert first.returncode == 0, first.stderr[-3000:]
  # The effective learning rate is printed, recorded and, this small, warned about (item 6).
  assert ("[optimizer] sgd: peak learning rate 2.34e-05 (0.003 x batch 4 / 512); schedule "
          "bit_hyperrule: linear warmup to step 1") in first.stdout, first.stdout
  assert "[optimizer] WARNING: the peak learning rate is 2.34e-05, 128x below" in first.stdout
  with open(os.path.join(run_dir, "config.json")) as f:
    assert json.load(f)["learning_rate"]["peak_learning_rate"] == 0.003 * 4 / 512
  longer = _finetune(csv, run_dir, "--train_steps=7")
  assert longer.returncode == 0, longer.stderr[-3000:]
  assert re.search(r"\[resume\] changed since the run directory was written: "
                   r"optimizer\.boundaries: run dir has \[.*\], now \[.*7\]", longer.stdout), \
      longer.stdout
  assert "[finished] step 7" in longer.stdout
