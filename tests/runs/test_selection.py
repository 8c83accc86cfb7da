"""selection.choose: the best finite validation value, ties and NaNs to the first."""

import math

from remedis_tf.runs import selection


def test_choose():
  grid = [0.01, 0.05, 0.1]
  assert selection.choose({0.01: 0.6, 0.05: 0.7, 0.1: 0.65}, grid) == 0.05
  assert selection.choose({0.01: 0.7, 0.05: 0.7, 0.1: 0.65}, grid) == 0.01  # tie: first
  assert selection.choose({0.01: math.nan, 0.05: 0.5, 0.1: math.nan}, grid) == 0.05
  assert selection.choose({lr: math.nan for lr in grid}, grid) == 0.01
  assert selection.lr_dir("/r", 0.05) == "/r/lr0.05"


def test_a_diverging_lr_loses_instead_of_stopping_the_grid(tmp_path):
  import os
  from remedis_tf.optim.factory import OptimizerConfig
  from remedis_tf.train.loop import LoopConfig
  from remedis_tf.train.supervised import SupervisedConfig
  from tests.eval.tiny_data import brightness_set
  root = str(tmp_path)
  train, _ = brightness_set(root, "train", 8, seed=0)
  val, _ = brightness_set(root, "val", 4, seed=1)
  opt = OptimizerConfig(name="sgd", base_lr=0.05, lr_scaling="none", schedule="constant",
                        total_steps=4, weight_decay=0.0)
  lines = []
  sel = selection.finetune_selected(
      train, val, SupervisedConfig(variant="tiny", global_batch_size=8), opt, None, 32,
      lambda d: LoopConfig(run_dir=d, total_steps=4, steps_per_loop=1, eval_every=2),
      [0.05, 1e9], os.path.join(root, "sel"), log=lines.append)
  assert sel.lr == 0.05 and math.isfinite(sel.grid["0.05"])
  assert any("lr 1e+09 diverged" in l for l in lines), lines[-5:]
