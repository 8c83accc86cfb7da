"""Where the time of one demo sweep cell goes (benchmarks/README.md, "Parallel fine-tunes").

  python -m benchmarks.cell_phases --workdir /tmp/cells [--cells 2]

Generates the demo's synthetic benchmark under ``--workdir`` (once), then fine-tunes
``--cells`` cells one after the other in this process exactly as the demo's sweep does
(site B without its held-out validation patients, 25 % of them, the demo's template with
random initialisation; ``runs.stages.run_supervised`` with validation, then the best
checkpoint reloaded and scored on all of site B's training images), printing a timestamp
per phase. Run two of these side by side (different ``--tag``) to see two cells share
the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--cells", type=int, default=2)
  parser.add_argument("--tag", default="a", help="names this process's run directories")
  args = parser.parse_args()
  t0 = time.time()

  def log(line: str) -> None:
    print(f"{time.time() - t0:7.2f}s {line}", flush=True)

  # pylint: disable=g-import-not-at-top
  from remedis_tf import synthetic
  from remedis_tf.data.label_fraction import holdout_split, select_fraction
  from remedis_tf.runs import demo, stages, sweep
  log("imports done")
  data_dir = os.path.join(args.workdir, "data")
  if not os.path.exists(os.path.join(data_dir, "site_b", "train.csv")):
    synthetic.generate_benchmark(data_dir, synthetic.SyntheticConfig(seed=0))
    log("synthetic benchmark generated")
  cfg = demo.DemoConfig(out_dir=args.workdir)
  site_b = demo._medical(  # pylint: disable=protected-access
      {"csv": {"site_b/train": os.path.join(data_dir, "site_b", "train.csv")},
       "out_dir": data_dir}, "site_b/train")
  b_train, b_val = holdout_split(site_b, cfg.site_b_val_fraction, cfg.seed)
  sup, opt = demo._finetune_configs(  # pylint: disable=protected-access
      cfg, len(b_train), cfg.sweep_epochs, cfg.sweep_min_steps, cfg.sweep_steps)
  augment = demo._finetune_augment(cfg.image_size)  # pylint: disable=protected-access
  template = sweep.FinetuneTemplate(
      supervised=sup, optimizer=opt, augment=augment, image_size=cfg.image_size,
      steps_rule="epochs", train_epochs=cfg.sweep_epochs, min_steps=cfg.sweep_min_steps,
      max_steps=cfg.sweep_steps)
  for i in range(args.cells):
    subset = select_fraction(b_train, 0.25, seed=i)
    plan = sweep.plan_cell(template, "", i, len(subset))
    run_dir = os.path.join(args.workdir, f"cell_{args.tag}{i}")
    shutil.rmtree(run_dir, ignore_errors=True)
    loop = demo._loop(run_dir, plan.total_steps,  # pylint: disable=protected-access
                      eval_every=max(plan.total_steps // 2, 3))
    t = time.time()
    stages.run_supervised(subset, plan.supervised, plan.optimizer, augment, cfg.image_size,
                          loop, validation=b_val, log=log)
    log(f"cell {i}: training with 2 validation passes {time.time() - t:.1f}s "
        f"({plan.total_steps} steps, batch {plan.supervised.global_batch_size})")
    t = time.time()
    task, run_config = stages.load_classifier(run_dir)
    stages.evaluate_task(task, site_b, cfg.image_size,
                         crop_fraction=stages.eval_crop_fraction(run_config))
    log(f"cell {i}: reload best checkpoint + score {len(site_b)} images "
        f"{time.time() - t:.1f}s")


if __name__ == "__main__":
  main()
