"""MICLe pairing (Azizi et al. 2021): positive pairs from two different images of one case.

The contrastive index stream for MICLe is a permutation of CASES (patients/lesions), not of
images, so a case appears at most once per batch. For a case at stream position p the two
images are picked by a stateless draw from a seed derived from (seed, p): two distinct
images when the case has at least two, otherwise the single image twice (which then gives
ordinary SimCLR views of one image).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf

from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import DataError

PAD = -1


def case_table(manifest: Manifest) -> Tuple[np.ndarray, np.ndarray]:
  """Groups records by case → ``(table int32 [C, M], counts int32 [C])``.

  Row c lists the record indices of case c (cases in first-seen order, records in manifest
  order), padded with ``PAD`` (-1) to M = the largest case size; ``counts[c]`` is the
  number of valid entries. Records without a patient id form single-image cases.
  """
  if len(manifest) == 0:
    raise DataError(f"cannot pair images of an empty manifest ({manifest.source or 'manifest'})")
  groups = list(manifest.by_patient().values())
  counts = np.asarray([len(g) for g in groups], np.int32)
  table = np.full((len(groups), int(counts.max())), PAD, np.int32)
  for c, members in enumerate(groups):
    table[c, :len(members)] = members
  return table, counts


def choose_pair(count: tf.Tensor, seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Two slots in ``[0, count)`` for one case, distinct when ``count >= 2``.

  ``count`` int32 scalar (>= 1), ``seed`` int [2] → (i1, i2) int32 scalars, uniformly
  distributed over ordered pairs of distinct slots.
  """
  count = tf.cast(count, tf.int32)
  i1 = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=count, dtype=tf.int32)
  other_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 1)
  offset = tf.random.stateless_uniform([], seed=other_seed, minval=0,
                                       maxval=tf.maximum(count - 1, 1), dtype=tf.int32)
  i2 = tf.where(count > 1, (i1 + 1 + offset) % count, i1)
  return i1, i2
