"""The effective learning rate a run prints and records (issue 19, item 6): peak after batch
scaling, the schedule's shape, and a warning when scaling made it tiny."""

from remedis_tf.optim.factory import OptimizerConfig


def test_hyperrule_at_a_small_batch_is_described_and_warned_about():
  config = OptimizerConfig(name="sgd", base_lr=0.003, schedule="bit_hyperrule",
                           total_steps=30, boundaries=(1, 9, 18, 27, 30), weight_decay=0.0)
  summary = config.schedule_summary(8)
  assert abs(summary["peak_learning_rate"] - 0.003 * 8 / 512) < 1e-12
  assert summary["scaling"] == "0.003 x batch 8 / 512"
  assert summary["schedule"] == ("bit_hyperrule: linear warmup to step 1, x0.1 at steps 9, 18, "
                                 "27, end at step 30")
  warning = config.small_learning_rate_warning(8)
  assert warning.startswith("WARNING: the peak learning rate is 4.69e-05, 64x below the "
                            "recipe's 0.003") and "--lr_scaling=none" in warning
  assert config.small_learning_rate_warning(512) is None


def test_unscaled_and_cosine_schedules():
  config = OptimizerConfig(name="sgd", base_lr=0.1, lr_scaling="none",
                           schedule="warmup_cosine", warmup_steps=5, total_steps=50)
  summary = config.schedule_summary(4)
  assert summary == {"peak_learning_rate": 0.1, "scaling": "0.1, not scaled",
                     "schedule": "warmup_cosine: linear warmup to step 5, cosine decay to 0 "
                                 "at step 50"}
  assert config.small_learning_rate_warning(4) is None
