"""Stage-2 study, measurement 3: the demo's stage 2 with other pairs/views, same stage-1 init,
scored by the frozen-feature evaluation (site A train → site A test).

Usage: python scripts/study/stage2_ablation.py DEMO_OUT RUN_DIR micle(0|1) views(old|new)
DEMO_OUT is a finished full demo folder (its data and runs/stage1_upstream are reused).
"""
import os
import shutil
import sys

from remedis_tf import synthetic
from remedis_tf.data import augment as augment_lib
from remedis_tf.data import recipes
from remedis_tf.eval import frozen
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import demo, stages
from remedis_tf.runs import frozen as frozen_runs
from remedis_tf.train.contrastive import ContrastiveConfig
from remedis_tf.train.loop import LoopConfig

out, run_dir, micle, views = sys.argv[1], sys.argv[2], bool(int(sys.argv[3])), sys.argv[4]
data = os.path.join(out, "data")
sets = {s: recipes.chexpert(f"{data}/{s}.csv", data,
                            label_columns=() if "unlabelled" in s else synthetic.FINDINGS)
        for s in ("site_a/unlabelled", "site_a/train", "site_a/test")}
aug = (augment_lib.get_preset("cxr", image_size=64, crop_area_min=0.25) if views == "old"
       else demo._contrastive_augment(64))  # pylint: disable=protected-access
steps = 600
shutil.rmtree(run_dir, ignore_errors=True)
stages.run_contrastive(
    sets["site_a/unlabelled"],
    ContrastiveConfig(variant="small", global_batch_size=64, temperature=0.1, micle=micle,
                      init=os.path.join(out, "runs", "stage1_upstream"), seed=0),
    OptimizerConfig(name="lars", base_lr=0.6, lr_scaling="linear", schedule="warmup_cosine",
                    warmup_steps=steps // 10, total_steps=steps, weight_decay=1e-6),
    aug, LoopConfig(run_dir=run_dir, total_steps=steps, steps_per_loop=10,
                    checkpoint_every=steps, summary_every=10, log_every=100),
    log=lambda l: print(l) if "step 600" in l or "step 300" in l else None)
frozen_runs.compare_models({"stage1": os.path.join(out, "runs", "stage1_upstream"),
                            f"stage2_micle{int(micle)}_{views}": run_dir},
                           sets["site_a/train"], sets["site_a/test"], 64,
                           frozen.FrozenEvalConfig(num_bootstrap=500))
