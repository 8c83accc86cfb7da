"""Synthetic labels and scores shared by the metric tests."""

import numpy as np


def binary_data(rng: np.random.Generator, n: int, ties: bool = False):
  """``(labels [N] 0/1 with ~30% positives, scores [N])``: positives score 1 higher on
  average; ``ties`` rounds scores to 0.1 so that many are exactly tied."""
  y = (rng.random(n) < 0.3).astype(float)
  s = rng.normal(size=n) + y
  if ties:
    s = np.round(s, 1)  # many exact ties
  return y, s
