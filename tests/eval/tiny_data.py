"""Tiny, trivially learnable image sets for evaluation / sweep / binary tests.

``brightness_set`` writes grey 32×32 PNGs whose label is "bright" (mean ≈ 0.7) vs "dark"
(≈ 0.3), with two images per patient, and a CheXpert-style CSV describing them.
"""

from __future__ import annotations

import csv
import os
from typing import Sequence, Tuple

import numpy as np
from PIL import Image

from remedis_tf.data.manifest import Manifest, Record


def brightness_set(root: str, name: str, num_patients: int = 12, seed: int = 0,
                   size: int = 32, shift: float = 0.0,
                   label_names: Sequence[str] = ("Bright",),
                   patient_prefix: str = "p") -> Tuple[Manifest, str]:
  """Writes ``root/name/*.png`` and ``root/name.csv``; returns ``(manifest, csv_path)``.

  Patients alternate negative/positive; each has 2 images. Extra label names get an
  independent random label (not learnable) so multi-label code paths are exercised.
  ``shift`` adds a constant to every intensity (a crude "other site"). Patient ids are
  ``{patient_prefix}000``, ``{patient_prefix}001``, ...
  """
  rng = np.random.default_rng(seed)
  folder = os.path.join(root, name)
  os.makedirs(folder, exist_ok=True)
  records = []
  rows = []
  for p in range(num_patients):
    y = p % 2
    others = [int(v) for v in rng.integers(0, 2, len(label_names) - 1)]
    labels = (float(y),) + tuple(float(v) for v in others)
    for k in range(2):
      level = (0.7 if y else 0.3) + shift + rng.normal(0, 0.04)
      img = np.clip(level + rng.normal(0, 0.05, (size, size)), 0, 1)
      rel = f"{name}/p{p:03d}_{k}.png"
      path = os.path.join(root, rel)
      Image.fromarray((img * 255).astype(np.uint8)).save(path)
      patient = f"{patient_prefix}{p:03d}"
      records.append(Record(path, rel, labels, (1.0,) * len(labels), patient_id=patient))
      rows.append([rel, patient] + [f"{v:g}" for v in labels])
  csv_path = os.path.join(root, f"{name}.csv")
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["Path", "Patient"] + list(label_names))
    writer.writerows(rows)
  task = "binary" if len(label_names) == 1 else "multilabel"
  return Manifest(tuple(records), tuple(label_names), task, csv_path), csv_path
