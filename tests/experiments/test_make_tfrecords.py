"""make_tfrecords binary: one subprocess run on a tiny CheXpert-style CSV with a bad row.

(The fail-fast path is covered in-process by tests/data/test_tfrecords.py.)
"""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from remedis_tf.data import tfrecords

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_csv_to_tfrecords_with_skipped_row(tmp_path):
  rows = ["Path,Patient,Site,Frontal/Lateral,Finding A,Finding B"]
  for i in range(5):
    rel = f"site_a/train/patient{i:05d}/study1/view1_frontal.png"
    (tmp_path / rel).parent.mkdir(parents=True)
    if i == 3:
      (tmp_path / rel).write_bytes(b"broken")
    else:
      Image.fromarray(np.full((40, 30), 20 * i, np.uint8)).save(tmp_path / rel)
    rows.append(f"{rel},P{i},site_a,Frontal,{i % 2},{'-1' if i == 2 else ''}")
  (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
  out = tmp_path / "rec" / "train"
  cmd = [sys.executable, "-m", "experiments.make_tfrecords", "--source=chexpert",
         f"--csv={tmp_path / 'train.csv'}", f"--data_root={tmp_path}",
         "--label_columns=Finding A,Finding B", f"--output_prefix={out}", "--num_shards=2",
         "--image_size=20", "--num_workers=2", "--skip_bad_examples",
         "--validate=none"]  # --skip_bad_examples decodes every file first, whatever --validate says
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "skipped 1 of 5" in proc.stdout and "patient00003" in proc.stdout
  assert "(row 5)" in proc.stdout  # the CSV row of the bad file, counting the header as row 1
  assert "converted 4/4 images" in proc.stdout
  ds, schema = tfrecords.read_tfrecords(str(out))
  assert schema.label_names == ("Finding A", "Finding B") and schema.count == 4
  examples = list(ds.as_numpy_iterator())
  assert sorted(e["patient"].decode() for e in examples) == ["P0", "P1", "P2", "P4"]
  assert all(e["image"].shape == (20, 15, 3) for e in examples)

