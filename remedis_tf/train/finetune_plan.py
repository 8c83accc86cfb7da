"""Fine-tuning plans: steps, LR boundaries, warmup, MixUp and resolution (BiT-HyperRule).

The one place that turns a dataset size (and its typical image side) into the numbers a
fine-tuning run needs; the binaries (``experiments/``) and the data-efficiency sweep call
:func:`plan_finetune` and :func:`typical_image_side` instead of each writing the rule.
The HyperRule table itself is :func:`remedis_tf.optim.schedules.bit_hyperrule`
(docs/numerics.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import tensorflow as tf

from remedis_tf.data import decode, tfrecords
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError
from remedis_tf.optim import schedules
from remedis_tf.optim.factory import OptimizerConfig

# How a plan's length is chosen: ``fixed`` (the given total_steps), ``epochs``
# (ceil(train_epochs · n / batch), clipped to [min_steps, max_steps]) or ``hyperrule``
# (HyperRule's schedule for n examples, in examples seen: its steps are for batch 512, so
# they are scaled by 512 / batch).
STEPS_RULES = ("fixed", "epochs", "hyperrule")


@dataclasses.dataclass(frozen=True)
class FinetunePlan:
  """The resolved numbers of one fine-tuning run.

  Attributes:
    total_steps: optimizer steps.
    warmup_steps: linear warmup steps (``boundaries[0]`` for the bit_hyperrule schedule,
      0 for constant, else from the warmup arguments, capped below ``total_steps``).
    boundaries: bit_hyperrule step boundaries (warmup end, three ÷10 decays, end; the last
      equals ``total_steps``); ``()`` for other schedules.
    mixup_alpha: MixUp α (HyperRule's 0.1 for >= 20k examples, else 0, unless given).
    image_size: HyperRule crop resolution in pixels (128 for sources under 96×96, else
      480); 0 when no image side was given.
  """
  total_steps: int
  warmup_steps: int
  boundaries: Tuple[int, ...]
  mixup_alpha: float
  image_size: int

  def optimizer(self, template: OptimizerConfig, **changes) -> OptimizerConfig:
    """``template`` with this plan's length, warmup and boundaries (and ``changes``, e.g.
    ``base_lr``): the finished optimizer config of the run."""
    return dataclasses.replace(template, total_steps=self.total_steps,
                               warmup_steps=self.warmup_steps, boundaries=self.boundaries,
                               **changes)


def steps_for_epochs(epochs: float, num_examples: int, global_batch_size: int) -> int:
  """Optimizer steps for ``epochs`` passes over ``num_examples`` (at least 1)."""
  return max(1, int(math.ceil(epochs * num_examples / global_batch_size)))


def plan_resolution(image_side: int) -> int:
  """HyperRule crop resolution for source images of (shorter) side ``image_side`` pixels:
  128 when ``image_side²`` is under 96·96, else 480."""
  if image_side < 1:
    raise ConfigError(f"image side must be >= 1 pixel, got {image_side}")
  return int(schedules.bit_hyperrule(1, 1, image_size=(image_side, image_side))["crop"])


def default_steps_rule(total_steps: int, schedule: str) -> str:
  """``fixed`` when ``total_steps`` > 0, else ``hyperrule`` for the bit_hyperrule schedule,
  else ``epochs`` (the binaries' rule)."""
  if total_steps:
    return "fixed"
  return "hyperrule" if schedule == "bit_hyperrule" else "epochs"


def hyperrule_steps(num_examples: int, global_batch_size: int,
                    step_scale: float = 1.0) -> Tuple[int, ...]:
  """HyperRule's five step boundaries for ``num_examples`` at ``global_batch_size``.

  The published table counts steps at batch 512 (:data:`schedules.HYPERRULE_REFERENCE_BATCH`);
  at batch ``B`` the same number of examples is seen in ``512 / B`` times as many steps,
  so every boundary is multiplied by ``512 / B`` (and by ``step_scale``). This is the
  equivalent of accumulating gradients to batch 512, without the accumulation: the peak
  lr is scaled linearly with ``B`` (``base_lr · B / 512``) as BiT does.
  """
  table = schedules.bit_hyperrule(num_examples, schedules.HYPERRULE_REFERENCE_BATCH)["steps"]
  factor = step_scale * schedules.HYPERRULE_REFERENCE_BATCH / global_batch_size
  return tuple(schedules.scale_steps(table, factor))


def plan_finetune(num_examples: int, global_batch_size: int, schedule: str, *,
                  steps_rule: str = "hyperrule", total_steps: int = 0,
                  train_epochs: float = 0.0, step_scale: float = 1.0,
                  warmup_steps: int = -1, warmup_epochs: float = 0.0,
                  mixup_alpha: float = -1.0, image_side: int = 0,
                  min_steps: int = 1, max_steps: int = 0) -> FinetunePlan:
  """Plans a fine-tuning run of ``num_examples`` training examples.

  Args:
    num_examples: training examples (> 0); picks the HyperRule row (< 20k, < 500k, else).
    global_batch_size: global batch (> 0), for the epochs and warmup-epochs rules.
    schedule: the optimizer schedule (``bit_hyperrule`` | ``warmup_cosine`` | ``constant``).
    steps_rule: one of :data:`STEPS_RULES`; ``hyperrule`` needs ``schedule=bit_hyperrule``.
    total_steps: the length for ``fixed`` (> 0).
    train_epochs: epochs for ``epochs`` (> 0).
    step_scale: multiplies the HyperRule schedule for ``hyperrule`` (1.0 = published; the
      steps are also scaled by 512 / batch, see :func:`hyperrule_steps`).
    warmup_steps, warmup_epochs: warmup of non-HyperRule schedules: ``warmup_steps`` if
      >= 0, else ``round(warmup_epochs · n / batch)``.
    mixup_alpha: MixUp α; negative = HyperRule's (0.1 for >= 20k examples, else 0).
    image_side: typical (shorter) side of the source images in pixels (see
      :func:`typical_image_side`); 0 = no resolution planned (``image_size`` 0).
    min_steps, max_steps: floor and ceiling of the ``epochs`` rule's length (``max_steps``
      0 = no ceiling), so tiny label fractions still train and large ones stay bounded.
  Returns:
    a :class:`FinetunePlan`. With ``schedule=bit_hyperrule`` and a ``fixed``/``epochs``
    length, HyperRule's shape (warmup, three decays) is stretched to that length; totals
    under 5 grow to the 5 distinct boundaries it needs.
  """
  if steps_rule not in STEPS_RULES:
    raise ConfigError(f"steps_rule must be one of {STEPS_RULES}, got {steps_rule!r}")
  if global_batch_size < 1:
    raise ConfigError(f"global batch size must be >= 1, got {global_batch_size}")
  rule = schedules.bit_hyperrule(num_examples, global_batch_size)
  mixup = rule["mixup_alpha"] if mixup_alpha < 0 else float(mixup_alpha)
  image_size = plan_resolution(image_side) if image_side else 0
  if steps_rule == "hyperrule":
    if schedule != "bit_hyperrule":
      raise ConfigError(f"steps_rule=hyperrule needs the bit_hyperrule learning-rate "
                        f"schedule, not {schedule}")
    steps = hyperrule_steps(num_examples, global_batch_size, step_scale)
    return FinetunePlan(steps[-1], steps[0], steps, mixup, image_size)
  if steps_rule == "fixed":
    if total_steps < 1:
      raise ConfigError(f"total_steps must be >= 1 for steps_rule=fixed, got {total_steps}")
    total = int(total_steps)
  else:
    if not train_epochs > 0:
      raise ConfigError(f"train_epochs must be > 0 for steps_rule=epochs, got {train_epochs}")
    total = steps_for_epochs(train_epochs, num_examples, global_batch_size)
    if min_steps > max_steps > 0:
      raise ConfigError(f"min_steps {min_steps} is above max_steps {max_steps}")
    total = max(total, int(min_steps))
    if max_steps > 0:
      total = min(total, int(max_steps))
  if schedule == "bit_hyperrule":
    steps = schedules.scale_steps(rule["steps"], total / rule["steps"][-1])
    return FinetunePlan(steps[-1], steps[0], tuple(steps), mixup, image_size)
  warmup = plan_warmup(schedule, total, num_examples / global_batch_size,
                       warmup_steps=warmup_steps, warmup_epochs=warmup_epochs)
  return FinetunePlan(total, warmup, (), mixup, image_size)


def plan_warmup(schedule: str, total_steps: int, steps_per_epoch: float, *,
                warmup_steps: int = -1, warmup_epochs: float = 0.0) -> int:
  """Linear warmup steps of a ``total_steps`` run (the rule of :func:`plan_finetune` and
  of the training binaries' ``--warmup_steps`` / ``--warmup_epochs``).

  ``warmup_steps`` if >= 0, else ``round(warmup_epochs · steps_per_epoch)``; capped at
  ``total_steps - 1`` so the schedule reaches its peak before it ends; always 0 for the
  ``constant`` schedule, which has no warmup.
  """
  if schedule == "constant":
    return 0
  warmup = (warmup_steps if warmup_steps >= 0
            else int(round(warmup_epochs * steps_per_epoch)))
  return min(warmup, max(total_steps - 1, 0))


def typical_image_side(manifest: Manifest) -> int:
  """Shorter side in pixels of the manifest's first image, from its header (no full decode
  for PNG/JPEG; DICOM is decoded). For a TFRecord index manifest, of the first example
  stored in the first record's shard. DataError naming the set when it is empty."""
  if not len(manifest):
    raise DataError(f"dataset {manifest.source or '<unnamed>'} is empty")
  path = manifest.records[0].image_path
  if manifest.storage.is_tfrecords:
    for serialized in tf.data.TFRecordDataset(path).take(1):
      example = tfrecords.parse_example(serialized, manifest.num_labels)
      return int(min(decode.image_hw_bytes(example["image/encoded"].numpy(), path)))
    raise DataError(f"{path}: TFRecord shard has no examples")
  return int(min(decode.image_hw(path)))
