"""One measurement, run in a fresh process: ``python -m benchmarks.measure SPEC_JSON OUT_JSON``.

SPEC_JSON is a dict with ``kind`` (matmul | train_step | pipeline | pipeline_profile |
step_profile) and that kind's parameters (see :mod:`benchmarks.run`); the result dict is
written to OUT_JSON. Running each measurement in its own process isolates its peak memory
and keeps one measurement's threads, caches and Keras global state out of the next.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import numpy as np


def _select_device(device: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if device == "cpu":
    try:
      tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):
      pass
  return tf


def _timings(fn: Callable[[], None], warmup: int, repeats: int) -> List[float]:
  for _ in range(warmup):
    fn()
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def _summary(times: List[float]) -> Dict[str, float]:
  return {"median_s": statistics.median(times), "best_s": min(times), "max_s": max(times),
          "repeats": len(times)}


# ----------------------------------------------------------------------------- matmul


def matmul(spec: Dict) -> Dict:
  """FLOP/s of square ``tf.linalg.matmul`` products (2·n³ FLOPs each) per size."""
  tf = _select_device(spec["device"])
  dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16}[spec["dtype"]]
  per_size = []
  for n, reps in zip(spec["sizes"], spec["repeats"]):
    a = tf.random.stateless_uniform([n, n], [1, 2], dtype=tf.float32)
    b = tf.random.stateless_uniform([n, n], [3, 4], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y)[:1, :1],
                                                             tf.float32)))
    times = _timings(lambda: product(a, b).numpy(), 1, reps)
    flops = 2.0 * n ** 3
    per_size.append({"n": n, **_summary(times), "median_flops": flops / statistics.median(times),
                     "best_flops": flops / min(times)})
  return {"per_size": per_size,
          "best_flops": max(p["best_flops"] for p in per_size),
          "median_flops": max(p["median_flops"] for p in per_size)}


# ------------------------------------------------------------------------- train step


def _build_task(spec: Dict):
  """→ (task, batch dict, backbone images per step, head widths) with the model built."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from remedis_tf.data import augment as augment_lib  # pylint: disable=g-import-not-at-top
  from remedis_tf.data.manifest import Manifest, Record  # pylint: disable=g-import-not-at-top
  from remedis_tf.optim.factory import OptimizerConfig  # pylint: disable=g-import-not-at-top
  from remedis_tf.train import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  from remedis_tf.train.contrastive import ContrastiveConfig, ContrastiveTask  # pylint: disable=g-import-not-at-top
  from remedis_tf.train.supervised import SupervisedConfig, SupervisedTask  # pylint: disable=g-import-not-at-top

  policy = strategy_lib.set_precision(spec["precision"])
  b, s, k = spec["batch"], spec["image_size"], 5
  rng = np.random.default_rng(0)
  images = lambda: tf.constant(rng.random((b, s, s, 3), dtype=np.float32))
  if spec["task"] == "contrastive":
    manifest = Manifest(records=tuple(Record(f"x{i}.png", f"x{i}") for i in range(b)),
                        source="benchmark")
    config = ContrastiveConfig(variant=spec["variant"], global_batch_size=b,
                               linear_probe=False)
    optimizer = OptimizerConfig(name="lars", base_lr=0.3, warmup_steps=10, total_steps=1000,
                                weight_decay=1e-6)
    task = ContrastiveTask(config, optimizer, augment_lib.AugmentConfig(image_size=s),
                           manifest, policy)
    batch = {"view1": images(), "view2": images()}
    backbone_images = 2 * b
  else:
    labels = rng.integers(0, 2, (b, k)).astype(np.float32)
    manifest = Manifest(records=tuple(
        Record(f"x{i}.png", f"x{i}", labels=tuple(labels[i]), mask=(1.0,) * k)
        for i in range(b)), label_names=tuple(f"l{j}" for j in range(k)), task="multilabel",
                        source="benchmark")
    config = SupervisedConfig(variant=spec["variant"], global_batch_size=b)
    optimizer = OptimizerConfig(name="sgd", base_lr=0.003, schedule="bit_hyperrule",
                                warmup_steps=10, total_steps=1000, weight_decay=0.0)
    task = SupervisedTask(config, optimizer, None, s, manifest, policy)
    batch = {"image": images(), "label": tf.constant(labels),
             "mask": tf.ones((b, k), tf.float32)}
    backbone_images = b
  strategy = tf.distribute.get_strategy()
  with strategy.scope():
    task.build(strategy)
  width = int(task.backbone.output_channels)
  if spec["task"] == "contrastive":
    heads = [width] * task.config.projection_layers + [task.config.projection_dim]
  else:
    heads = [width, k]
  return task, batch, backbone_images, heads, strategy


def make_train_step(spec: Dict):
  """→ (one_step, losses, compile_s, parts): ``one_step()`` runs the task's real
  ``train_step`` once under ``strategy.run`` in a ``tf.function`` (as ``loop.run_loop``
  does) on one fixed in-memory batch and appends the loss to ``losses``; the first call
  (tracing) is made here and timed as ``compile_s``. ``parts = (task, batch,
  backbone_images, heads, strategy)``."""
  tf = _select_device(spec["device"])
  task, batch, backbone_images, heads, strategy = _build_task(spec)
  step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  step_fn = tf.function(task.train_step, jit_compile=True) if spec.get("xla") else \
      task.train_step

  @tf.function
  def run_step(batch):
    per_replica = strategy.run(step_fn, args=(batch, step_var))
    step_var.assign_add(1)
    return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica["loss"], axis=None)

  losses = []
  t_compile = time.perf_counter()
  losses.append(float(run_step(batch).numpy()))
  compile_s = time.perf_counter() - t_compile

  def one_step():
    losses.append(float(run_step(batch).numpy()))

  return one_step, losses, compile_s, (task, batch, backbone_images, heads, strategy)


def train_step(spec: Dict) -> Dict:
  """Median wall time of the task's real ``train_step`` (see :func:`make_train_step`)."""
  from benchmarks import flops as flops_lib  # pylint: disable=g-import-not-at-top
  one_step, losses, compile_s, parts = make_train_step(spec)
  task, batch, backbone_images, heads, strategy = parts
  for _ in range(spec["warmup"]):
    one_step()
  cpu0 = time.process_time()
  times = _timings(one_step, 0, spec["steps"])
  cpu_per_step = (time.process_time() - cpu0) / spec["steps"]
  step_flops = flops_lib.train_step_flops(spec["variant"], spec["image_size"],
                                          backbone_images, heads)
  med = statistics.median(times)
  out = {**_summary(times), "first_call_s": compile_s,
         "examples_per_s": spec["batch"] / med,
         "backbone_images_per_s": backbone_images / med,
         "step_flops": step_flops, "achieved_flops": step_flops / med,
         "cpu_s_per_step": cpu_per_step,
         "finite_loss": bool(np.all(np.isfinite(losses)))}
  if spec["device"] == "gpu":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # float32 matmuls/convolutions run as TF32 on Ampere+ GPUs while this is on (default).
    out["tf32_enabled"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
  if spec.get("profile"):
    out["profile"] = _step_parts(task, batch, spec, strategy)
  return out


def _step_parts(task, batch, spec, strategy) -> Dict[str, float]:
  """Median seconds of: backbone forward, forward + backward (gradients only), and the
  whole step; the optimizer update ≈ whole − forward/backward."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if spec["task"] == "contrastive":
    x = tf.concat([batch["view1"], batch["view2"]], 0)
  else:
    x = batch["image"]
  backbone = task.backbone
  variables = task.trainable_variables()

  @tf.function
  def forward(x):
    return tf.reduce_sum(tf.cast(backbone(x, training=True)["pooled"], tf.float32))

  @tf.function
  def forward_backward(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.cast(backbone(x, training=True)["pooled"], tf.float32))
    grads = tape.gradient(loss, variables)
    return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads if g is not None])

  reps = max(3, spec["steps"] // 2)
  fwd = statistics.median(_timings(lambda: forward(x).numpy(), 1, reps))
  fwd_bwd = statistics.median(_timings(lambda: forward_backward(x).numpy(), 1, reps))
  return {"forward_s": fwd, "forward_backward_s": fwd_bwd}


# --------------------------------------------------------------------------- pipelines


def _manifest(spec: Dict):
  from benchmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from remedis_tf.data import tfrecords  # pylint: disable=g-import-not-at-top
  if spec["source"] == "tfrecords":
    return tfrecords.tfrecords_manifest(data_lib.tfrecord_prefix(spec["data_dir"]))
  return data_lib.png_manifest(spec["data_dir"])


def pipeline(spec: Dict) -> Dict:
  """Examples/s of a pipeline (all cores, tf.data AUTOTUNE) after warm-up batches."""
  tf = _select_device("cpu")
  from remedis_tf.data import augment as augment_lib  # pylint: disable=g-import-not-at-top
  from remedis_tf.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  manifest = _manifest(spec)
  s, b = spec["image_size"], spec["batch"]
  t_setup = time.perf_counter()
  if spec["which"] == "contrastive":
    ds = pipeline_lib.contrastive_dataset(
        manifest, augment=augment_lib.get_preset(spec["preset"], image_size=s),
        global_batch_size=b, seed=0)
  elif spec["which"] == "finetune":
    ds = pipeline_lib.supervised_dataset(
        manifest, augment=augment_lib.get_preset(spec["preset"], image_size=s),
        image_size=s, global_batch_size=b, seed=0)
  else:
    ds = pipeline_lib.eval_dataset(manifest, image_size=s, batch_size=b).repeat()
  setup_s = time.perf_counter() - t_setup
  it = iter(ds)
  for _ in range(spec["warmup_batches"]):
    tf.nest.map_structure(lambda t: t.numpy(), next(it))
  t0 = time.perf_counter()
  cpu0 = time.process_time()
  for _ in range(spec["batches"]):
    tf.nest.map_structure(lambda t: t.numpy(), next(it))
  wall = time.perf_counter() - t0
  cpu = time.process_time() - cpu0
  n = spec["batches"] * b
  return {"examples_per_s": n / wall, "examples": n, "wall_s": wall,
          "cpu_ms_per_example": 1000.0 * cpu / n, "setup_s": setup_s}


def pipeline_profile(spec: Dict) -> Dict:
  """Single-core CPU cost (ms per call) of reading + decoding and of each augmentation
  step of ``spec["preset"]``, each applied unconditionally to 256-px decoded images."""
  tf = _select_device("cpu")
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  from remedis_tf.data import augment as A  # pylint: disable=g-import-not-at-top
  from remedis_tf.data import decode  # pylint: disable=g-import-not-at-top
  manifest = _manifest({**spec, "source": "png"})
  cfg = A.get_preset(spec["preset"], image_size=spec["image_size"])
  paths = manifest.paths()[:32]
  images = tf.stack([decode.load_image(p) for p in paths])
  view_in = tf.stack([A.random_resized_crop(images[i], cfg, [i, 0]) for i in range(len(paths))])
  n = spec["calls"]
  seed = lambda i: tf.stack([tf.cast(i, tf.int64), tf.constant(7, tf.int64)])
  full = lambda i: images[i % len(paths)]
  small = lambda i: view_in[i % len(paths)]
  stages = {
      "read+decode PNG": lambda i: decode.load_image(tf.gather(paths, i % len(paths))),
      "augment_view (whole view)": lambda i: A.augment_view(full(i), cfg, seed(i)),
      "random_resized_crop (bicubic)": lambda i: A.random_resized_crop(full(i), cfg, seed(i)),
      "flips": lambda i: A.random_flips(small(i), cfg, seed(i)),
      "color_jitter": lambda i: A.color_jitter(small(i), max(cfg.color_strength, 0.5), seed(i)),
      "to_grayscale": lambda i: A.to_grayscale(small(i)),
      "random_blur": lambda i: A.random_blur(small(i), cfg, seed(i)),
  }
  if cfg.hist_eq_prob > 0:
    stages["equalize_histogram (full image)"] = lambda i: A.equalize_histogram(full(i))
  if cfg.rotation_degrees > 0 or cfg.elastic_prob > 0:
    stages["warped_crop (elastic+rotation+crop)"] = lambda i: A.warped_crop(
        full(i), cfg, 0.3, 400.0 * 256 / cfg.image_size, 20.0 * 256 / cfg.image_size, seed(i))
  out = {}
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  for name, fn in stages.items():
    ds = tf.data.Dataset.range(n).map(fn).with_options(options)
    for _ in ds.take(4):
      pass
    t0 = time.process_time()
    for _ in ds:
      pass
    out[name] = 1000.0 * (time.process_time() - t0) / n
  return {"cpu_ms_per_call": out}


KINDS = {"matmul": matmul, "train_step": train_step, "pipeline": pipeline,
         "pipeline_profile": pipeline_profile}


def main(argv: List[str]) -> int:
  spec = json.loads(argv[1])
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  result = KINDS[spec["kind"]](spec)
  with open(argv[2], "w") as f:
    json.dump(result, f)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
