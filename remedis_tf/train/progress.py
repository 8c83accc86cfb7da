"""The loop's progress line: metrics, images/s and ETA over the window since the last line."""

from __future__ import annotations

import math
import time
from typing import Dict, Sequence


def format_eta(seconds: float) -> str:
  """``1h05m``, ``3m07s``, ``42s``; ``?`` when unknown (infinite or NaN)."""
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """Progress lines of one run; rates are measured over the steps since the previous line
  (or since the run started, at ``start_step``)."""

  def __init__(self, total_steps: int, global_batch_size: int, names: Sequence[str],
               start_step: int):
    self.total_steps, self.global_batch_size = total_steps, global_batch_size
    self.names = list(names)
    self._time, self._step = time.time(), start_step  # the open window

  def line(self, step: int, metrics: Dict[str, float]) -> str:
    """``[train] step S/T loss ... | R img/s | ETA E``; closes the window at ``step``."""
    now = time.time()
    rate = (step - self._step) * self.global_batch_size / max(now - self._time, 1e-9)
    steps_per_s = (step - self._step) / max(now - self._time, 1e-9)
    eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
    shown = " ".join(f"{k} {metrics[k]:.4f}" for k in self.names)
    self._time, self._step = now, step
    return (f"[train] step {step}/{self.total_steps} {shown} | {rate:.1f} img/s | "
            f"ETA {format_eta(eta)}")
