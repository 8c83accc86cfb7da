"""Stage-2 study, measurement 2: a short contrastive run on a benchmark copy.

Prints the NT-Xent loss (vs the chance level 2·ln(2B−1)), contrastive accuracy and the
leave-one-patient-out kNN mean AUC on site A's valid split before and after training.
Usage: python scripts/study/stage2_train.py DATA_DIR RUN_DIR key=value ...
keys: steps batch variant lr temperature micle crop rot elastic histeq color flip init
"""
import math
import shutil
import sys

from remedis_tf import synthetic
from remedis_tf.data import augment as augment_lib
from remedis_tf.data import recipes
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import stages
from remedis_tf.train.contrastive import ContrastiveConfig
from remedis_tf.train.loop import LoopConfig

data_dir, run_dir = sys.argv[1], sys.argv[2]
o = dict(steps=40, batch=32, variant="tiny", lr=0.6, temperature=0.1, micle=1, crop=0.25,
         rot=45.0, elastic=0.5, histeq=0.5, color=0.5, flip=0.5, init="", opt="lars", evals=1)
for kv in sys.argv[3:]:
  k, v = kv.split("=")
  o[k] = type(o[k])(v) if not isinstance(o[k], str) else v
shutil.rmtree(run_dir, ignore_errors=True)
pool = recipes.chexpert(f"{data_dir}/site_a/unlabelled.csv", data_dir, label_columns=())
valid = recipes.chexpert(f"{data_dir}/site_a/valid.csv", data_dir, label_columns=synthetic.FINDINGS)
aug = augment_lib.get_preset("cxr", image_size=64, crop_area_min=o["crop"],
                             rotation_degrees=o["rot"], elastic_prob=o["elastic"],
                             hist_eq_prob=o["histeq"], color_strength=o["color"],
                             flip_lr_prob=o["flip"])
steps = o["steps"]
loop = LoopConfig(run_dir=run_dir, total_steps=steps, steps_per_loop=min(10, steps),
                  checkpoint_every=steps, summary_every=min(10, steps), log_every=10,
                  eval_every=max(steps // o["evals"], 1))
lines = []
res = stages.run_contrastive(
    pool, ContrastiveConfig(variant=o["variant"], global_batch_size=o["batch"],
                            temperature=o["temperature"], micle=bool(o["micle"]),
                            init=o["init"], seed=0),
    OptimizerConfig(name=o["opt"], base_lr=o["lr"], lr_scaling="linear" if o["opt"] == "lars" else "none",
                    schedule="warmup_cosine", warmup_steps=max(steps // 10, 1),
                    total_steps=steps, weight_decay=1e-6),
    aug, loop, log=lines.append, monitor=valid, knn_k=20)
hist = [h for h in res.history if "contrastive_loss" in h]
print("settings", o)
print(f"chance loss 2ln(2B-1) = {2 * math.log(2 * o['batch'] - 1):.2f}")
for h in hist:
  print({k: round(v, 3) for k, v in h.items()})
print("knn lines:", [l for l in lines if "knn" in l])
