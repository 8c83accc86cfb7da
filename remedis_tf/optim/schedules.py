"""Learning-rate scaling and schedules (docs/numerics.md).

* :func:`scaled_learning_rate` — the batch-size rule of SimCLR (linear ``base·B/256`` or
  ``base·sqrt(B)``) and of BiT (linear with reference batch 512).
* :class:`WarmupCosine` — linear warmup from 0 to the peak, then cosine decay to 0
  (contrastive pretraining).
* :func:`bit_hyperrule` / :class:`BiTHyperRuleSchedule` — BiT-HyperRule for fine-tuning:
  schedule length, step decays, MixUp and resolution chosen from the dataset size.
* :func:`scale_steps` — shrink (or stretch) a step schedule for tiny demos.

Steps are optimizer steps (``optimizer.iterations``) counted from 0; learning rates are
float32 scalars.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

from remedis_tf.errors import ConfigError

LR_SCALINGS = ("linear", "sqrt", "none")


def scaled_learning_rate(base_lr: float, global_batch_size: int, scaling: str = "linear",
                         reference_batch_size: int = 256) -> float:
  """Peak learning rate for a global batch size.

  ``linear``: ``base_lr * B / reference_batch_size`` (256 for SimCLR, 512 for BiT);
  ``sqrt``: ``base_lr * sqrt(B)`` (SimCLR's rule for small batches / long schedules);
  ``none``: ``base_lr``.
  """
  if global_batch_size <= 0:
    raise ConfigError(f"global batch size must be > 0, got {global_batch_size}")
  if scaling == "linear":
    if reference_batch_size <= 0:
      raise ConfigError(f"reference batch size must be > 0, got {reference_batch_size}")
    return float(base_lr) * global_batch_size / reference_batch_size
  if scaling == "sqrt":
    return float(base_lr) * math.sqrt(global_batch_size)
  if scaling == "none":
    return float(base_lr)
  raise ConfigError(f"unknown lr scaling {scaling!r}; valid: {', '.join(LR_SCALINGS)}")


def _after_linear_warmup(step: tf.Tensor, peak: tf.Tensor, warmup_steps: float,
                         after: tf.Tensor) -> tf.Tensor:
  """``peak * step / warmup_steps`` before ``warmup_steps``, ``after`` from then on (and
  everywhere when there is no warmup). The warmup of both schedules below."""
  if warmup_steps == 0:
    return after
  return tf.where(step < warmup_steps, peak * step / warmup_steps, after)


@keras.saving.register_keras_serializable(package="remedis_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup 0 -> ``peak_lr`` over ``warmup_steps``, then cosine to 0 at ``total_steps``.

  ``lr(s) = peak * s / warmup`` for ``s < warmup``; otherwise
  ``peak * 0.5 * (1 + cos(pi * min(1, (s - warmup) / (total - warmup))))``, which is 0 from
  ``total_steps`` on.
  """

  def __init__(self, peak_lr: float, warmup_steps: int, total_steps: int,
               name: Optional[str] = None):
    super().__init__()
    if warmup_steps < 0 or total_steps <= 0 or warmup_steps > total_steps:
      raise ConfigError(f"WarmupCosine needs 0 <= warmup_steps <= total_steps and "
                        f"total_steps > 0, got warmup_steps={warmup_steps}, "
                        f"total_steps={total_steps}")
    self.peak_lr = float(peak_lr)
    self.warmup_steps = int(warmup_steps)
    self.total_steps = int(total_steps)
    self.name = name

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak_lr, tf.float32)
    warmup = float(self.warmup_steps)
    decay_steps = float(max(1, self.total_steps - self.warmup_steps))
    progress = tf.clip_by_value((step - warmup) / decay_steps, 0.0, 1.0)
    cosine = peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
    return _after_linear_warmup(step, peak, warmup, cosine)

  def get_config(self):
    return {"peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps, "name": self.name}


# BiT-HyperRule schedule lengths (warmup end, three decays, end) by dataset size.
_HYPERRULE_STEPS = (
    (20_000, (100, 200, 300, 400, 500)),
    (500_000, (500, 3000, 6000, 9000, 10000)),
    (None, (500, 6000, 12000, 18000, 20000)),
)
HYPERRULE_REFERENCE_BATCH = 512
MIXUP_MIN_EXAMPLES = 20_000
SMALL_IMAGE_AREA = 96 * 96


def bit_hyperrule(dataset_size: int, global_batch_size: int, base_lr: float = 0.003,
                  image_size: Union[None, int, Tuple[int, int]] = None) -> Dict:
  """BiT-HyperRule settings for fine-tuning on ``dataset_size`` labelled examples.

  Args:
    dataset_size: number of training examples.
    global_batch_size: global batch; the peak lr is ``base_lr * B / 512``.
    base_lr: BiT's 0.003 at batch 512.
    image_size: original image size, ``int`` (square) or ``(height, width)``; ``None``
      leaves ``resize``/``crop`` as None.

  Returns:
    dict with ``steps`` (5 step boundaries: warmup end, three ÷10 decays, end; by dataset
    size < 20k / < 500k / else), ``warmup_steps``, ``total_steps``, ``peak_lr``,
    ``lr_values`` (the 4 plateau values after warmup: peak, /10, /100, /1000),
    ``mixup_alpha`` (0.1 when ``dataset_size >= 20000`` else 0.0), ``resize`` and ``crop``
    (160/128 when the image AREA is below 96·96, else 512/480, as BiT does).
  """
  if dataset_size <= 0:
    raise ConfigError(f"dataset size must be > 0, got {dataset_size}")
  steps = next(s for limit, s in _HYPERRULE_STEPS if limit is None or dataset_size < limit)
  peak = scaled_learning_rate(base_lr, global_batch_size, "linear", HYPERRULE_REFERENCE_BATCH)
  resize = crop = None
  if image_size is not None:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    resize, crop = (160, 128) if height * width < SMALL_IMAGE_AREA else (512, 480)
  return {
      "steps": list(steps),
      "warmup_steps": steps[0],
      "total_steps": steps[-1],
      "peak_lr": peak,
      "lr_values": [peak * 0.1 ** k for k in range(len(steps) - 1)],
      "mixup_alpha": 0.1 if dataset_size >= MIXUP_MIN_EXAMPLES else 0.0,
      "resize": resize,
      "crop": crop,
  }


def scale_steps(steps: Sequence[int], factor: float) -> list:
  """Scales a step schedule by ``factor`` (e.g. 0.1 turns BiT's 500-step rule into 50).

  Each boundary becomes ``max(1, round(step * factor))`` and is then bumped so the list
  stays strictly increasing; relative positions are preserved up to rounding. Use it for
  demos and smoke tests only: published numbers come from the unscaled schedule.
  """
  if factor <= 0:
    raise ConfigError(f"step scale factor must be > 0, got {factor}")
  scaled = []
  for step in steps:
    value = max(1, int(round(step * factor)))
    if scaled and value <= scaled[-1]:
      value = scaled[-1] + 1
    scaled.append(value)
  return scaled


def check_boundaries(boundaries: Sequence[int]) -> Tuple[int, ...]:
  """Validates step-decay boundaries (>= 2, non-negative, strictly increasing); returns ints."""
  boundaries = tuple(int(b) for b in boundaries)
  if len(boundaries) < 2 or boundaries[0] < 0 or any(
      b <= a for a, b in zip(boundaries, boundaries[1:])):
    raise ConfigError(f"HyperRule boundaries must be >= 2 strictly increasing steps "
                      f"(warmup end, decays..., end), got {list(boundaries)}")
  return boundaries


@keras.saving.register_keras_serializable(package="remedis_tf")
class BiTHyperRuleSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """BiT-HyperRule learning rate: linear warmup, then ÷10 at each decay boundary.

  With ``boundaries = [w, d1, ..., dn, end]``: ``lr(s) = peak * s / w`` for ``s < w``;
  afterwards ``peak * 0.1 ** (number of d_i <= s)``. Training is meant to stop at
  ``end`` (BiT stops there); later steps keep the last value.
  """

  def __init__(self, peak_lr: float, boundaries: Sequence[int], name: Optional[str] = None):
    super().__init__()
    self.peak_lr = float(peak_lr)
    self.boundaries = check_boundaries(boundaries)
    self.name = name

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak_lr, tf.float32)
    decays = tf.zeros([], tf.float32)
    for boundary in self.boundaries[1:-1]:
      decays += tf.cast(step >= float(boundary), tf.float32)
    plateau = peak * tf.pow(0.1, decays)
    return _after_linear_warmup(step, peak, float(self.boundaries[0]), plateau)

  def get_config(self):
    return {"peak_lr": self.peak_lr, "boundaries": list(self.boundaries), "name": self.name}
