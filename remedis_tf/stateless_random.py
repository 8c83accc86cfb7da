"""Stateless Gamma and Beta samplers built only from XLA-compilable ops.

``tf.random.stateless_gamma`` has no XLA kernel (StatelessRandomGammaV2/V3 are missing on
XLA_CPU_JIT and XLA_GPU_JIT), so a train step that draws a MixUp λ with it cannot be
compiled with ``jit_compile=True``. These samplers use only stateless uniform/normal
draws and elementwise math, so they compile everywhere (CPU, GPU, TPU) and give the same
numbers with and without XLA (up to float rounding).

Why not ``tf.random.stateless_uniform``/``stateless_normal`` on floats: under XLA they give
different numbers than the TF kernels for the same seed (checked on TF 2.21 CPU), whereas
the integer draws agree bit for bit as long as each seed word is in [0, 2^32) (XLA reads
only the low 32 bits of an int64 seed word; the TF kernels read all 64). So every seed is
masked to 32 bits first, uniforms are built from 24 random integer bits and normals from
them by Box–Muller, and a compiled step reproduces the uncompiled one.

Method: Marsaglia & Tsang (2000) for Gamma(α+1) with a fixed number of proposals (the
first accepted one wins; acceptance is >= 95% for shape >= 1, so 16 proposals all fail
with probability < 1e-20), then the boost Gamma(α) = Gamma(α+1)·U^(1/α), done in log
space so small α (MixUp's 0.1) never underflows to 0.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

_PROPOSALS = 16


def _seed(seed) -> tf.Tensor:
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64) or seed.shape.as_list() != [2]:
    raise TypeError(f"seed must be an int32/int64 tensor of shape [2], got {seed.dtype} "
                    f"{seed.shape}")
  return tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), tf.constant(0xFFFFFFFF, tf.int64))


def uniform(shape: Sequence[int], seed) -> tf.Tensor:
  """U(0, 1) float32 of ``shape``, never exactly 0 or 1; identical with and without XLA."""
  bits = tf.random.stateless_uniform(list(shape), _seed(seed), minval=0, maxval=1 << 24,
                                     dtype=tf.int32)
  return (tf.cast(bits, tf.float32) + 0.5) * (1.0 / (1 << 24))


def normal(shape: Sequence[int], seed) -> tf.Tensor:
  """N(0, 1) float32 of ``shape`` (Box–Muller on two :func:`uniform` draws)."""
  keys = tf.random.experimental.stateless_split(_seed(seed), 2)
  u1, u2 = uniform(shape, keys[0]), uniform(shape, keys[1])
  return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * 3.141592653589793 * u2)


def log_gamma(shape: Sequence[int], alpha: float, seed) -> tf.Tensor:
  """log X for X ~ Gamma(alpha, 1), float32 of ``shape``.

  Args:
    shape: static output shape.
    alpha: shape parameter (> 0, a Python float).
    seed: int ``[2]`` tensor; same seed → same draws.
  """
  if not alpha > 0:
    raise ValueError(f"alpha must be > 0, got {alpha}")
  keys = tf.random.experimental.stateless_split(_seed(seed), 3)
  shape = list(shape)
  a = float(alpha) + 1.0
  d = a - 1.0 / 3.0
  c = 1.0 / (9.0 * d) ** 0.5
  x = normal(shape + [_PROPOSALS], keys[0])
  u = uniform(shape + [_PROPOSALS], keys[1])
  t = 1.0 + c * x
  v = t * t * t
  safe_v = tf.maximum(v, 1e-30)
  accept = tf.logical_and(
      v > 0, tf.math.log(u) < 0.5 * x * x + d - d * safe_v + d * tf.math.log(safe_v))
  # First accepted proposal; with none accepted (p < 1e-20) the mode d is used.
  first = tf.argmax(tf.cast(accept, tf.int32), axis=-1, output_type=tf.int32)
  chosen = tf.gather(safe_v, first, axis=-1, batch_dims=len(shape))
  any_accepted = tf.reduce_any(accept, axis=-1)
  log_g_plus_one = tf.math.log(d) + tf.where(any_accepted, tf.math.log(chosen), 0.0)
  boost = uniform(shape, keys[2])
  return log_g_plus_one + tf.math.log(boost) / float(alpha)


def symmetric_beta(alpha: float, seed, shape: Sequence[int] = ()) -> tf.Tensor:
  """λ ~ Beta(alpha, alpha) in [0, 1] as float32 of ``shape`` (a scalar by default).

  Computed as sigmoid(log G1 − log G2) for independent G1, G2 ~ Gamma(alpha), which equals
  G1 / (G1 + G2) without underflow for small alpha.
  """
  keys = tf.random.experimental.stateless_split(_seed(seed), 2)
  return tf.sigmoid(log_gamma(shape, alpha, keys[0]) - log_gamma(shape, alpha, keys[1]))
