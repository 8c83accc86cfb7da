"""Analytic multiply-accumulate (MAC) counts of the BiT ResNet-v2 and its heads.

Counted: every convolution (H_out·W_out·k²·C_in·C_out MACs) and dense layer
(C_in·C_out MACs) of the forward pass, per image. Not counted: group/batch norm, weight
standardisation, ReLU, pooling, residual adds and the loss (element-wise work that is
memory-bound, a few % of the MACs). FLOPs = 2·MACs; a training step is taken as
3 × forward (forward + gradients w.r.t. activations + gradients w.r.t. weights).
"""

from __future__ import annotations

from typing import Dict

from remedis_tf.models.resnet_v2 import ResNetSpec, get_spec

TRAIN_TO_FORWARD = 3.0


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
  return (size + 2 * pad - kernel) // stride + 1


def backbone_macs(spec: ResNetSpec, image_size: int) -> Dict[str, int]:
  """Forward MACs per image of a square ``image_size`` input, by stage plus ``total``."""
  out: Dict[str, int] = {}
  h = _conv_out(image_size, 7, 2, 3)  # root conv 7x7/2, padding 3
  out["root"] = h * h * 49 * 3 * spec.root_filters
  h = _conv_out(h, 3, 2, 1)  # max pool 3x3/2, padding 1
  channels = spec.root_filters
  for b, units in enumerate(spec.units, start=1):
    f = spec.block_filters(b)
    macs = 0
    for u in range(1, units + 1):
      stride = (1 if b == 1 else 2) if u == 1 else 1
      h_out = _conv_out(h, 3, stride, 1)
      macs += h * h * channels * f          # a: 1x1, C_in → f (before the stride)
      macs += h_out * h_out * 9 * f * f     # b: 3x3/stride, f → f
      macs += h_out * h_out * f * 4 * f     # c: 1x1, f → 4f
      if u == 1 and (stride != 1 or channels != 4 * f):
        macs += h_out * h_out * channels * 4 * f  # projection shortcut 1x1/stride
      channels, h = 4 * f, h_out
    out[f"block{b}"] = macs
  out["total"] = sum(out.values())
  return out


def head_macs(widths) -> int:
  """MACs of a chain of dense layers with the given widths (input first)."""
  return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def train_step_flops(variant: str, image_size: int, images: int, head_widths=()) -> float:
  """FLOPs of one training step over ``images`` backbone inputs (contrastive: 2 per
  example) with an optional dense head chain ``head_widths`` (input width first)."""
  forward = backbone_macs(get_spec(variant), image_size)["total"]
  if head_widths:
    forward += head_macs(list(head_widths))
  return 2.0 * TRAIN_TO_FORWARD * forward * images
