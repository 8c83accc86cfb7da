"""Stage 2 on tiny data: the loss goes down, the kNN monitor reports, summaries are written."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from remedis_tf import synthetic
from remedis_tf.data import augment, recipes
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import stages
from remedis_tf.train.contrastive import ContrastiveConfig
from remedis_tf.train.loop import LoopConfig


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory):
  return synthetic.generate_benchmark(str(tmp_path_factory.mktemp("syn")),
                                      synthetic.SyntheticConfig.quick())


def _distinct_pool(folder, n=48, size=40, seed=0):
  """``n`` images that stay recognisable under crop and flip: each has its own colour and a
  smooth left-right ramp of its own slope, so two views of one image are far more alike than
  views of two different images, whatever CPU rounds the arithmetic."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)[None, :, None]
  records = []
  for i in range(n):
    colour = rng.uniform(0.15, 0.85, 3).astype(np.float32)
    slope = rng.uniform(-0.12, 0.12, 3).astype(np.float32)
    img = np.clip(colour + slope * ramp + np.zeros((size, size, 3), np.float32), 0, 1)
    path = os.path.join(folder, f"img{i:03d}.png")
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    records.append(Record(path, f"img{i:03d}", patient_id=f"p{i:03d}"))
  return Manifest(tuple(records), (), "unlabelled", folder)


def test_contrastive_loss_decreases_and_knn_monitor_runs(quick_data, tmp_path):
  root = quick_data["out_dir"]
  # A pool where contrastive learning is easy by construction: the assertion below is about
  # the implementation learning, not about how hard the synthetic benchmark is.
  pool = _distinct_pool(str(tmp_path / "pool"))
  monitor = recipes.chexpert(quick_data["csv"]["site_a/valid"], root,
                             label_columns=synthetic.FINDINGS)
  # Weak augmentation so that a few dozen steps can make progress.
  aug = augment.get_preset("generic", image_size=32, color_prob=0.0, blur_prob=0.0,
                           grayscale_prob=0.0, crop_area_min=0.5)
  steps = 40
  opt = OptimizerConfig(name="lars", base_lr=1.0, warmup_steps=4, total_steps=steps,
                        weight_decay=1e-6)
  lines = []
  result = stages.run_contrastive(
      pool, ContrastiveConfig(variant="tiny", global_batch_size=16, seed=3), opt, aug,
      LoopConfig(run_dir=str(tmp_path), total_steps=steps, steps_per_loop=5, log_every=5,
                 summary_every=5, checkpoint_every=steps, eval_every=20),
      monitor=monitor, knn_k=5, log=lines.append)
  losses = [h["contrastive_loss"] for h in result.history]
  batch = 16
  chance = 2 * math.log(2 * batch - 1)  # NT-Xent of a constant embedding (SimCLR's scale)
  # Margins, not one machine's rounding: the end must be well below both the start and the
  # loss of an embedding that tells nothing apart.
  assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
  assert np.mean(losses[-2:]) < 0.8 * chance, losses
  knn_lines = [l for l in lines if l.startswith("[eval]") and "knn_mean_auc" in l]
  assert len(knn_lines) == 2  # at step 20 and at the end
  events = tf.io.gfile.glob(str(tmp_path / "train" / "events.out.tfevents.*"))
  tags = set()
  for event in tf.compat.v1.train.summary_iterator(events[0]):
    for value in event.summary.value:
      tags.add(value.tag)
  assert {"contrastive_loss", "contrastive_accuracy", "contrastive_entropy",
          "learning_rate", "weight_norm", "eval/knn_mean_auc",
          "augmented_view_pairs"} <= tags
