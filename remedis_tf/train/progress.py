"""The loop's progress line: metrics, images/s and ETA.

The first host-loop call of a run (or of a resumed run) traces and compiles the step
function and fills the input pipeline, which can take longer than many steps. Both rates
leave it out: images/s is measured over the steps since the previous line, the ETA over
all steps since the first call ended. A line printed right after the first call has no
such steps yet and shows ``?``.
"""

from __future__ import annotations

import math
import time
from typing import Dict, Optional, Sequence, Tuple


def format_eta(seconds: float) -> str:
  """``1h05m``, ``3m07s``, ``42s``; ``?`` when unknown (infinite or NaN)."""
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """Progress lines of one run (see the module docstring)."""

  def __init__(self, total_steps: int, global_batch_size: int, names: Sequence[str],
               start_step: int, clock=time.time):
    self.total_steps, self.global_batch_size = total_steps, global_batch_size
    self.names = list(names)
    self._clock = clock
    self._step = start_step  # the open window of the images/s rate starts here ...
    self._time: Optional[float] = None  # ... at this time, once the first call ended
    self._warm: Optional[Tuple[float, int]] = None  # (time, step) when the first call ended

  def steps_done(self, step: int) -> None:
    """Called after each host-loop call that reached ``step``; the first call's end starts
    the timing (its tracing and start-up time is left out)."""
    if self._warm is None:
      now = self._clock()
      self._warm = (now, step)
      self._time, self._step = now, step

  def line(self, step: int, metrics: Dict[str, float]) -> str:
    """``[train] step S/T loss ... | R img/s | ETA E``; closes the window at ``step``."""
    now = self._clock()
    rate = eta = float("nan")
    if self._time is not None and step > self._step:
      rate = (step - self._step) * self.global_batch_size / max(now - self._time, 1e-9)
    if step >= self.total_steps:
      eta = 0.0
    elif self._warm is not None and step > self._warm[1]:
      steps_per_s = (step - self._warm[1]) / max(now - self._warm[0], 1e-9)
      eta = (self.total_steps - step) / steps_per_s
    shown = " ".join(f"{k} {metrics[k]:.4f}" for k in self.names)
    if self._time is not None:
      self._time, self._step = now, step
    rate_text = f"{rate:.1f}" if math.isfinite(rate) else "?"
    return (f"[train] step {step}/{self.total_steps} {shown} | {rate_text} img/s | "
            f"ETA {format_eta(eta)}")
