"""A PyTorch peer of the R50x1 train steps, for side-by-side timing (optional extra).

Needs ``torch`` and ``timm`` (``benchmarks/requirements-peer.txt``); nothing in remedis_tf
or its tests imports this module. The model is timm's ``resnetv2_50x1_bit`` (BiT
ResNet-v2: GroupNorm(32) + weight-standardised convolutions, the architecture of our
``r50x1``) with random weights (``pretrained=False``, nothing is downloaded).

* ``finetune``: B images → 5 logits, ``BCEWithLogitsLoss`` (multi-label, as our masked
  sigmoid loss with an all-ones mask), ``SGD(momentum=0.9)``.
* ``contrastive``: two views of B images → 2B backbone passes → SimCLR-v2 projection
  head (2048 → Linear → BN → ReLU → Linear → BN, as ours) → NT-Xent (τ = 0.1) over the 2B
  embeddings; ``SGD(momentum=0.9, weight_decay=1e-6)`` in place of our LARS (LARS adds
  per-layer norms, a negligible cost next to the backbone).
* ``bfloat16``: the step runs under ``torch.autocast("cpu", torch.bfloat16)``, PyTorch's
  counterpart of Keras' ``mixed_bfloat16`` (float32 weights, bf16 compute).

Run through :mod:`benchmarks.worker`, never imported by the rest of the harness.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict

import torch  # pylint: disable=import-error
import timm  # pylint: disable=import-error

NUM_LABELS = 5


def _nt_xent(z: "torch.Tensor", temperature: float) -> "torch.Tensor":
  """SimCLR's NT-Xent over ``z = [2B, d]`` (rows i and i+B are positives)."""
  z = torch.nn.functional.normalize(z.float(), dim=1)
  n = z.shape[0] // 2
  logits = z @ z.t() / temperature
  logits = logits - 1e9 * torch.eye(2 * n, dtype=logits.dtype)
  targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
  return torch.nn.functional.cross_entropy(logits, targets)


def build_step(spec: Dict) -> Callable[[], float]:
  """→ a function running one training step on a fixed random batch, returning the loss.

  ``spec``: task (finetune | contrastive), image_size, batch, precision (float32 |
  bfloat16), optional channels_last (default False: PyTorch's default NCHW layout).
  """
  torch.manual_seed(0)
  s, b = spec["image_size"], spec["batch"]
  contrastive = spec["task"] == "contrastive"
  model = timm.create_model("resnetv2_50x1_bit", pretrained=False,
                            num_classes=0 if contrastive else NUM_LABELS)
  params = list(model.parameters())
  if contrastive:
    width = model.num_features
    head = torch.nn.Sequential(
        torch.nn.Linear(width, width, bias=False), torch.nn.BatchNorm1d(width),
        torch.nn.ReLU(), torch.nn.Linear(width, 128, bias=False),
        torch.nn.BatchNorm1d(128, affine=False))
    params += list(head.parameters())
    images = torch.rand(2 * b, 3, s, s)
    optimizer = torch.optim.SGD(params, lr=0.3, momentum=0.9, weight_decay=1e-6)
  else:
    head = None
    images = torch.rand(b, 3, s, s)
    labels = (torch.rand(b, NUM_LABELS) > 0.5).float()
    optimizer = torch.optim.SGD(params, lr=0.003, momentum=0.9)
  if spec.get("channels_last"):
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  model.train()
  bf16 = spec["precision"] == "bfloat16"

  def step() -> float:
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      x = images * 2.0 - 1.0  # our model rescales [0, 1] inputs inside, too
      if contrastive:
        loss = _nt_xent(head(model(x)), 0.1)
      else:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(x).float(), labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())

  return step


def describe() -> Dict:
  """Versions and threading of the peer, for the result file."""
  return {"framework": "pytorch", "torch": torch.__version__, "timm": timm.__version__,
          "model": "timm resnetv2_50x1_bit (random init)",
          "threads": torch.get_num_threads(),
          "mkldnn": bool(torch.backends.mkldnn.is_available())}
