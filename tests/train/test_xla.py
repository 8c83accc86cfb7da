"""Every train step compiles with XLA (jit_compile=True) and matches the uncompiled step.

One device (default strategy), tiny backbone, 32 px. Each case builds the task twice with
the same seed (same initial weights), runs two steps on the same batches in plain graph
mode and with XLA, and compares metrics and all trainable weights.
"""

import os

# Faster XLA compilation on CPU (numerics unchanged). XLA reads these flags once, at its
# first compile, which happens after test collection, when this module is imported.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_parallel_codegen_split_count=4",
     "--xla_backend_optimization_level=0"]).strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from remedis_tf.data import augment as augment_lib  # noqa: E402
from remedis_tf.data.manifest import Manifest, Record  # noqa: E402
from remedis_tf.errors import ConfigError  # noqa: E402
from remedis_tf.optim.factory import OptimizerConfig  # noqa: E402
from remedis_tf.train import loop as loop_lib  # noqa: E402
from remedis_tf.train import strategy as strategy_lib  # noqa: E402
from remedis_tf.train.contrastive import ContrastiveConfig, ContrastiveTask  # noqa: E402
from remedis_tf.train.supervised import SupervisedConfig, SupervisedTask  # noqa: E402

# Compares TensorFlow float results with references or across code paths: run under
# numerics matrix (docs/testing.md).
pytestmark = pytest.mark.numerics

# Tolerances here (docs/testing.md):
# XLA vs graph mode: other kernels for the same float32 train steps; metrics rtol 1e-4 /
# atol 1e-5 and weights 1e-4 of the model's largest weight (norm offsets carry cancellation
# noise far above their own 1e-4).
# Measured: every assert_allclose here used <= 0.029 of its tolerance (>= 35x margin) in
# numerics-matrix rows [default, oneDNN off] with the tests' seeds shifted by [+0] (AMD EPYC
# AVX2, 2026-12-03, 250 comparisons).

SIZE = 32
BATCH = 4


def _manifest(task, num_labels):
  """Schema-only manifest (train steps never read the image paths)."""
  records = []
  for i in range(8):
    if task == "multiclass":
      labels = tuple(float(j == i % num_labels) for j in range(num_labels))
    else:
      labels = tuple(float((i + j) % 2) for j in range(num_labels))
    mask = tuple(float((i + j) % 3 != 0) for j in range(num_labels))
    records.append(Record(f"/unused/{i}.png", str(i), labels, mask))
  return Manifest(tuple(records), tuple(f"c{j}" for j in range(num_labels)), task, "xla-test")


def _batches(manifest, keys, seed):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(2):
    batch = {k: tf.constant(rng.random((BATCH, SIZE, SIZE, 3)), tf.float32) for k in keys}
    rows = rng.choice(len(manifest), BATCH, replace=False)
    batch["label"] = tf.constant(manifest.label_matrix()[rows])
    batch["mask"] = tf.constant(manifest.mask_matrix()[rows])
    out.append(batch)
  return out


def _train(make_task, batches, jit_compile):
  task = make_task()
  task.build(tf.distribute.get_strategy())
  step = tf.function(task.train_step, jit_compile=jit_compile)
  metrics = [step(b, tf.constant(i, tf.int64)) for i, b in enumerate(batches)]
  return ({k: float(v) for k, v in metrics[-1].items()},
          [v.numpy() for v in task.trainable_variables()])


def _assert_same(plain, compiled):
  (m1, w1), (m2, w2) = plain, compiled
  assert sorted(m1) == sorted(m2)
  for k in m1:
    np.testing.assert_allclose(m2[k], m1[k], rtol=1e-4, atol=1e-5, err_msg=k)
  _assert_close_weights(w1, w2)


def _assert_close_weights(expected, got):
  """Equal up to float noise: 1e-4 relative, or 1e-4 of the model's largest weight (tiny
  tensors such as norm offsets carry cancellation noise far above their own 1e-4)."""
  assert len(expected) == len(got) > 0
  scale = max(float(np.max(np.abs(w))) for w in expected)
  for a, b in zip(expected, got):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * scale)


def test_contrastive_step_with_linear_probe_compiles():
  manifest = _manifest("multilabel", 3)
  optimizer = OptimizerConfig(name="lars", base_lr=0.3, warmup_steps=1, total_steps=10)
  augment = augment_lib.get_preset("generic", image_size=SIZE)

  def make():
    return ContrastiveTask(ContrastiveConfig(variant="tiny", global_batch_size=BATCH,
                                             linear_probe=True, seed=1),
                           optimizer, augment, manifest)

  batches = _batches(manifest, ("view1", "view2"), seed=0)
  plain = _train(make, batches, jit_compile=False)
  assert "probe_loss" in plain[0]
  _assert_same(plain, _train(make, batches, jit_compile=True))


@pytest.mark.parametrize("task_type,num_labels,train_mode,projection_layer", [
    ("multilabel", 3, "full", 0),
    ("multiclass", 4, "linear", 1),
])
def test_supervised_step_with_mixup_compiles(task_type, num_labels, train_mode,
                                             projection_layer):
  manifest = _manifest(task_type, num_labels)
  optimizer = OptimizerConfig(name="sgd", base_lr=0.5, schedule="constant", total_steps=10,
                              weight_decay=0.0)

  def make(mixup_alpha=0.4):
    config = SupervisedConfig(variant="tiny", global_batch_size=BATCH, train_mode=train_mode,
                              from_projection_layer=projection_layer,
                              mixup_alpha=mixup_alpha, seed=2)
    return SupervisedTask(config, optimizer, None, SIZE, manifest)

  batches = _batches(manifest, ("image",), seed=1)
  plain = _train(make, batches, jit_compile=False)
  _assert_same(plain, _train(make, batches, jit_compile=True))
  if train_mode == "full":
    # MixUp really acted (else the comparison above would not cover it).
    no_mixup = _train(lambda: make(mixup_alpha=0.0), batches, jit_compile=False)
    assert any(not np.allclose(a, b, rtol=1e-4, atol=1e-6)
               for a, b in zip(plain[1], no_mixup[1]))


class _InMemorySupervisedTask(SupervisedTask):
  """Fine-tuning on one fixed in-memory batch, repeated (no image files needed)."""

  def dataset_fn(self, input_context, start_step):
    return tf.data.Dataset.from_tensors(_batches(self.manifest, ("image",), seed=7)[0]).repeat()


def _loop_task():
  return _InMemorySupervisedTask(
      SupervisedConfig(variant="tiny", global_batch_size=BATCH, mixup_alpha=0.4, seed=3),
      OptimizerConfig(name="sgd", base_lr=0.5, schedule="constant", total_steps=10,
                      weight_decay=0.0),
      None, SIZE, _manifest("multiclass", 4))


def test_loop_with_xla_matches_plain_steps(tmp_path):
  task = _loop_task()
  result = loop_lib.run_loop(
      task, tf.distribute.get_strategy(),
      loop_lib.LoopConfig(run_dir=str(tmp_path), total_steps=2, steps_per_loop=2, xla=True,
                          log_every=2, summary_every=2, checkpoint_every=2),
      log=lambda line: None)
  assert result.final_step == 2 and not result.preempted
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")
  batch = _batches(_manifest("multiclass", 4), ("image",), seed=7)[0]
  _, weights = _train(_loop_task, [batch, batch], jit_compile=False)
  # The loop reports the mean loss over its host loop of two steps.
  assert np.isfinite(result.last_metrics["loss"])
  _assert_close_weights(weights, [v.numpy() for v in task.trainable_variables()])


def test_xla_with_several_replicas_is_a_config_error(tmp_path):
  mirrored = strategy_lib.make_strategy("mirrored", num_cpu_devices=2)
  task = _InMemorySupervisedTask(
      SupervisedConfig(variant="tiny", global_batch_size=BATCH),
      OptimizerConfig(name="sgd", base_lr=0.1, schedule="constant", total_steps=10),
      None, SIZE, _manifest("multiclass", 4))
  with pytest.raises(ConfigError, match="--xla needs a single replica.*has 2"):
    loop_lib.run_loop(task, mirrored,
                      loop_lib.LoopConfig(run_dir=str(tmp_path), total_steps=1, xla=True))
