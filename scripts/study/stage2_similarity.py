"""Stage-2 study, measurement 1: how alike are synthetic images, before and after the views?

For N images of site A's unlabelled pool: centred-pixel cosine similarity (Pearson r) of
(a) two different patients, (b) two images of one patient (MICLe pair), (c) two augmented
views of one image (SimCLR pair), (d) augmented views of two different patients.
Usage: python scripts/study/stage2_similarity.py DATA_DIR [crop_area_min] [preset]
"""
import sys

import numpy as np
import tensorflow as tf

from remedis_tf.data import augment as augment_lib
from remedis_tf.data import decode, recipes

data_dir = sys.argv[1]
crop_min = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
preset = sys.argv[3] if len(sys.argv) > 3 else "cxr"
size = 64
m = recipes.chexpert(f"{data_dir}/site_a/unlabelled.csv", data_dir, label_columns=())
by_patient = m.by_patient()
rng = np.random.default_rng(0)
patients = sorted(by_patient)[:200]


def load(rec):
  return decode.read_image_numpy(m.records[rec].image_path)


def r(a, b):
  a = a.reshape(-1) - a.mean()
  b = b.reshape(-1) - b.mean()
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


aug = augment_lib.get_preset(preset, image_size=size, crop_area_min=crop_min)
first = [load(by_patient[p][0]) for p in patients]
second = [load(by_patient[p][1]) for p in patients]


def view(img, s):
  return augment_lib.augment_view(tf.constant(img), aug, tf.constant([s, 7], tf.int64)).numpy()


raw_between = [r(first[i], first[i + 1]) for i in range(len(patients) - 1)]
raw_micle = [r(first[i], second[i]) for i in range(len(patients))]
views1 = [view(first[i], 2 * i) for i in range(len(patients))]
views2 = [view(first[i], 2 * i + 1) for i in range(len(patients))]
views_m = [view(second[i], 2 * i + 1) for i in range(len(patients))]
simclr = [r(views1[i], views2[i]) for i in range(len(patients))]
micle = [r(views1[i], views_m[i]) for i in range(len(patients))]
aug_between = [r(views1[i], views2[i + 1]) for i in range(len(patients) - 1)]
# Retrieval: for each view1, is its own view2 the most similar among all view2 (pixels)?
V1 = np.stack([v.reshape(-1) - v.mean() for v in views1]); V1 /= np.linalg.norm(V1, axis=1, keepdims=True)
V2 = np.stack([v.reshape(-1) - v.mean() for v in views2]); V2 /= np.linalg.norm(V2, axis=1, keepdims=True)
S = V1 @ V2.T
top1 = float((S.argmax(1) == np.arange(len(S))).mean())
R1 = np.stack([f.reshape(-1) - f.mean() for f in first]); R1 /= np.linalg.norm(R1, axis=1, keepdims=True)
R2 = np.stack([f.reshape(-1) - f.mean() for f in second]); R2 /= np.linalg.norm(R2, axis=1, keepdims=True)
raw_top1 = float(((R1 @ R2.T).argmax(1) == np.arange(len(R1))).mean())
f = lambda x: f"{np.mean(x):.3f} ± {np.std(x):.3f}"
print(f"preset {preset} crop_area_min {crop_min}; {len(patients)} patients, 64 px source {first[0].shape}")
print("raw, different patients     r =", f(raw_between))
print("raw, same patient (MICLe)   r =", f(raw_micle), " pixel top-1 retrieval of 2nd image:", raw_top1)
print("views, same image (SimCLR)  r =", f(simclr), " pixel top-1 retrieval of own view:", top1)
print("views, same patient (MICLe) r =", f(micle))
print("views, different patients  r =", f(aug_between))
print("frac SimCLR pairs less alike than a different-patient pair:",
      float(np.mean(np.array(simclr)[:-1] < np.array(aug_between))))
