"""selection.choose: the best finite validation value, ties and NaNs to the first."""

import math

from remedis_tf.runs import selection


def test_choose():
  grid = [0.01, 0.05, 0.1]
  assert selection.choose({0.01: 0.6, 0.05: 0.7, 0.1: 0.65}, grid) == 0.05
  assert selection.choose({0.01: 0.7, 0.05: 0.7, 0.1: 0.65}, grid) == 0.01  # tie: first
  assert selection.choose({0.01: math.nan, 0.05: 0.5, 0.1: math.nan}, grid) == 0.05
  assert selection.choose({lr: math.nan for lr in grid}, grid) == 0.01
  assert selection.lr_dir("/r", 0.05) == "/r/lr0.05"
