"""plan_finetune / typical_image_side against the BiT-HyperRule table of docs/numerics.md."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from remedis_tf.data import tfrecords
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.train import finetune_plan as fp

# docs/numerics.md, written out independently of schedules._HYPERRULE_STEPS.
SMALL = (100, 200, 300, 400, 500)
MEDIUM = (500, 3000, 6000, 9000, 10000)
LARGE = (500, 6000, 12000, 18000, 20000)


@pytest.mark.parametrize("n, steps, mixup", [
    (1, SMALL, 0.0), (19_999, SMALL, 0.0), (20_000, MEDIUM, 0.1), (499_999, MEDIUM, 0.1),
    (500_000, LARGE, 0.1), (3_000_000, LARGE, 0.1)])
def test_hyperrule_rows_at_the_thresholds(n, steps, mixup):
  plan = fp.plan_finetune(n, 512, "bit_hyperrule")
  assert plan.boundaries == steps
  assert (plan.total_steps, plan.warmup_steps) == (steps[-1], steps[0])
  assert plan.mixup_alpha == mixup
  assert plan.image_size == 0  # no image side given


@pytest.mark.parametrize("side, crop", [(1, 128), (32, 128), (95, 128), (96, 480),
                                        (97, 480), (4000, 480)])
def test_resolution_rule(side, crop):
  # Images under 96x96 → resize 160 / crop 128, else 512 / 480.
  assert fp.plan_resolution(side) == crop
  assert fp.plan_finetune(10, 8, "bit_hyperrule", image_side=side).image_size == crop
  with pytest.raises(ConfigError, match="image side"):
    fp.plan_resolution(0)


def test_step_scale_and_explicit_mixup():
  plan = fp.plan_finetune(1000, 512, "bit_hyperrule", step_scale=0.1, mixup_alpha=0.3)
  assert plan.boundaries == (10, 20, 30, 40, 50) and plan.mixup_alpha == 0.3
  tiny = fp.plan_finetune(1000, 64, "bit_hyperrule", step_scale=0.001)
  assert tiny.boundaries == (1, 2, 3, 4, 5)  # bumped to stay strictly increasing


def test_fixed_and_epochs_lengths_stretch_the_hyperrule_shape():
  plan = fp.plan_finetune(30_000, 512, "bit_hyperrule", steps_rule="fixed", total_steps=100)
  # MEDIUM stretched to 100 steps: round(b * 100 / 10000).
  assert plan.boundaries == (5, 30, 60, 90, 100) and plan.total_steps == 100
  assert plan.warmup_steps == 5
  short = fp.plan_finetune(50, 16, "bit_hyperrule", steps_rule="fixed", total_steps=2)
  assert short.boundaries == (1, 2, 3, 4, 5) and short.total_steps == 5
  epochs = fp.plan_finetune(40, 16, "warmup_cosine", steps_rule="epochs", train_epochs=2.5)
  assert epochs.total_steps == math.ceil(2.5 * 40 / 16) and epochs.boundaries == ()


def test_warmup_of_other_schedules():
  plan = fp.plan_finetune(64, 8, "warmup_cosine", steps_rule="epochs", train_epochs=1,
                          warmup_epochs=0.5)
  assert (plan.total_steps, plan.warmup_steps) == (8, 4)
  capped = fp.plan_finetune(64, 8, "warmup_cosine", steps_rule="fixed", total_steps=3,
                            warmup_steps=50)
  assert capped.warmup_steps == 2  # below total_steps
  constant = fp.plan_finetune(64, 8, "constant", steps_rule="fixed", total_steps=3,
                              warmup_steps=2)
  assert constant.warmup_steps == 0


def test_plan_warmup_is_the_rule_plans_and_binaries_share():
  # Steps win over epochs; epochs round; the cap keeps one step after the warmup.
  assert fp.plan_warmup("warmup_cosine", 100, 7.5, warmup_steps=3, warmup_epochs=9) == 3
  assert fp.plan_warmup("warmup_cosine", 100, 7.5, warmup_epochs=2) == 15
  assert fp.plan_warmup("bit_hyperrule", 10, 4.0, warmup_epochs=5) == 9
  assert fp.plan_warmup("warmup_cosine", 1, 4.0, warmup_steps=5) == 0
  assert fp.plan_warmup("constant", 100, 4.0, warmup_steps=5, warmup_epochs=1) == 0
  plan = fp.plan_finetune(64, 8, "warmup_cosine", steps_rule="fixed", total_steps=20,
                          warmup_epochs=1.5)
  assert plan.warmup_steps == fp.plan_warmup("warmup_cosine", 20, 64 / 8,
                                             warmup_epochs=1.5) == 12


def test_bad_plans_are_config_errors():
  for kwargs, match in (({"steps_rule": "forever"}, "steps_rule"),
                        ({"steps_rule": "fixed"}, "total_steps"),
                        ({"steps_rule": "epochs"}, "train_epochs")):
    with pytest.raises(ConfigError, match=match):
      fp.plan_finetune(10, 8, "bit_hyperrule", **kwargs)
  with pytest.raises(ConfigError, match="bit_hyperrule"):
    fp.plan_finetune(10, 8, "warmup_cosine", steps_rule="hyperrule")
  with pytest.raises(ConfigError, match="dataset size"):
    fp.plan_finetune(0, 8, "bit_hyperrule")
  assert fp.default_steps_rule(7, "bit_hyperrule") == "fixed"
  assert fp.default_steps_rule(0, "bit_hyperrule") == "hyperrule"
  assert fp.default_steps_rule(0, "constant") == "epochs"


def _images(tmp_path, shapes, ext="png"):
  records = []
  for i, (h, w) in enumerate(shapes):
    path = os.path.join(tmp_path, f"im{i}.{ext}")
    Image.fromarray(np.full((h, w), 100 + i, np.uint8)).save(path)
    records.append(Record(path, f"im{i}", (float(i % 2),), (1.0,), patient_id=f"p{i}"))
  return Manifest(tuple(records), ("Y",), "binary", str(tmp_path))


def test_typical_image_side_reads_the_first_header(tmp_path):
  assert fp.typical_image_side(_images(tmp_path, [(40, 70), (200, 200)])) == 40
  assert fp.typical_image_side(_images(tmp_path, [(90, 33)], "jpg")) == 33
  with pytest.raises(DataError, match="empty"):
    fp.typical_image_side(Manifest((), source="nothing.csv"))


def test_typical_image_side_of_a_tfrecord_manifest(tmp_path):
  manifest = _images(tmp_path, [(50, 120), (50, 120), (64, 64)])
  prefix = os.path.join(tmp_path, "shards", "set")
  tfrecords.write_tfrecords(manifest, prefix, num_shards=2, num_workers=1)
  indexed = tfrecords.tfrecords_manifest(prefix)
  assert indexed.storage.is_tfrecords
  assert fp.typical_image_side(indexed) == 50
  # Downscaled shards report the stored size (longest side 60 → 25 x 60).
  small = os.path.join(tmp_path, "shards", "small")
  tfrecords.write_tfrecords(manifest, small, num_shards=1, num_workers=1, image_size=60)
  assert fp.typical_image_side(tfrecords.tfrecords_manifest(small)) == 25


@pytest.mark.parametrize("batch", [512, 256, 64, 32])
def test_hyperrule_steps_scale_with_the_batch(batch):
  # The table's steps are for batch 512: at batch B the run sees the same number of
  # examples in 512 / B times as many steps (each boundary scaled alike).
  plan = fp.plan_finetune(1000, batch, "bit_hyperrule")
  assert plan.boundaries == tuple(b * 512 // batch for b in SMALL)
  assert plan.total_steps * batch == SMALL[-1] * 512


def test_epochs_rule_floor_and_ceiling():
  # ceil(10 · 24 / 24) = 10 steps, raised to the floor; ceil(10 · 600 / 32) = 188, capped.
  assert fp.plan_finetune(24, 24, "bit_hyperrule", steps_rule="epochs", train_epochs=10,
                          min_steps=30, max_steps=150).total_steps == 30
  assert fp.plan_finetune(600, 32, "bit_hyperrule", steps_rule="epochs", train_epochs=10,
                          min_steps=30, max_steps=150).total_steps == 150
  assert fp.plan_finetune(200, 32, "warmup_cosine", steps_rule="epochs", train_epochs=10,
                          min_steps=30, max_steps=150).total_steps == 63
  with pytest.raises(ConfigError, match="min_steps"):
    fp.plan_finetune(200, 32, "warmup_cosine", steps_rule="epochs", train_epochs=10,
                     min_steps=30, max_steps=20)
