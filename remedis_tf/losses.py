"""Losses: NT-Xent (SimCLR / MICLe) and masked classification losses.

All functions are pure TensorFlow, compute in float32 whatever the input dtype (so a
``mixed_bfloat16`` model gets a float32 loss), and return *per-replica* quantities.

Reduction contract (the train step's job, not this module's):

* ``contrastive_loss`` returns the mean over the LOCAL anchors of one replica. Keras
  optimizers SUM gradients across replicas, so a step running under a strategy with N
  replicas must minimise ``loss / strategy.num_replicas_in_sync``; the summed gradients are
  then exactly those of 1 replica on the whole global batch (tested in
  ``tests/test_losses.py``). Log the unscaled ``loss`` (e.g. mean over replicas).
* The classification losses return a per-example ``[B]`` vector. A step turns it into the
  global mean with ``tf.reduce_sum(per_example) / global_batch_size`` (what
  ``tf.nn.compute_average_loss`` does); the optimizer's cross-replica sum then gives the
  mean over the global batch.
"""

from __future__ import annotations

from typing import Dict, Tuple, Union

import tensorflow as tf

from remedis_tf.errors import ConfigError
from remedis_tf.tasks import LABELLED_TASKS

LARGE_NUM = 1e9

ReplicaContextArg = Union[None, str, tf.distribute.ReplicaContext]


def _resolve_replica_context(replica_context: ReplicaContextArg):
  """Returns a replica context with > 1 replica to gather over, else None."""
  if replica_context is None:
    return None
  if isinstance(replica_context, str):
    if replica_context != "auto":
      raise ConfigError(f"replica_context must be None, 'auto' or a ReplicaContext, "
                        f"got {replica_context!r}")
    replica_context = tf.distribute.get_replica_context()
  if replica_context is None or replica_context.num_replicas_in_sync <= 1:
    return None
  return replica_context


def contrastive_loss(z1, z2, temperature: float = 0.1, normalize: bool = True,
                     replica_context: ReplicaContextArg = "auto",
                     large_num: float = LARGE_NUM) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """NT-Xent at google-research/simclr's scale, with keys gathered from all replicas.

  Args:
    z1: ``[b, d]`` projections of view 1 (the local, per-replica batch).
    z2: ``[b, d]`` projections of view 2; row i is the positive of ``z1[i]``.
    temperature: softmax temperature tau (> 0).
    normalize: l2-normalise z1 and z2 first (SimCLR does).
    replica_context: ``"auto"`` gathers keys across replicas when called inside
      ``strategy.run`` with more than one replica; ``None`` uses only the local batch; a
      ``tf.distribute.ReplicaContext`` gathers over that one.
    large_num: what is subtracted from self-similarity logits to mask them out.

  Returns:
    ``(loss, logits_ab, labels)``: ``loss`` is a float32 scalar, the mean over the local
    anchors of ``loss_a + loss_b`` (twice the per-anchor mean many PyTorch libraries
    print). ``logits_ab`` is ``[b, N]`` float32 (view-1 anchors against the view-2 keys of
    the global batch of N), ``labels`` is ``[b]`` int32, the column of each anchor's
    positive in ``logits_ab`` (its global index). See the module docstring for how a
    distributed train step must scale ``loss``.
  """
  if temperature <= 0:
    raise ConfigError(f"contrastive temperature must be > 0, got {temperature}")
  z1 = tf.cast(z1, tf.float32)
  z2 = tf.cast(z2, tf.float32)
  if normalize:
    z1 = tf.math.l2_normalize(z1, axis=-1)
    z2 = tf.math.l2_normalize(z2, axis=-1)
  local_batch = tf.shape(z1)[0]

  context = _resolve_replica_context(replica_context)
  if context is None:
    keys1, keys2 = z1, z2
    offset = 0
  else:
    # all_gather is differentiable: gradients flow back to the replica owning each key.
    keys1 = context.all_gather(z1, axis=0)
    keys2 = context.all_gather(z2, axis=0)
    offset = tf.cast(context.replica_id_in_sync_group, tf.int32) * local_batch
  global_batch = tf.shape(keys1)[0]

  labels = tf.range(local_batch, dtype=tf.int32) + offset
  self_mask = tf.one_hot(labels, global_batch, dtype=tf.float32)
  inv_t = 1.0 / float(temperature)

  logits_aa = tf.matmul(z1, keys1, transpose_b=True) * inv_t - self_mask * large_num
  logits_bb = tf.matmul(z2, keys2, transpose_b=True) * inv_t - self_mask * large_num
  logits_ab = tf.matmul(z1, keys2, transpose_b=True) * inv_t
  logits_ba = tf.matmul(z2, keys1, transpose_b=True) * inv_t

  # Positive sits in the first block ([other-view keys, same-view keys]) at the global index.
  loss_a = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.concat([logits_ab, logits_aa], axis=1))
  loss_b = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.concat([logits_ba, logits_bb], axis=1))
  loss = tf.reduce_mean(loss_a) + tf.reduce_mean(loss_b)
  return loss, logits_ab, labels


def contrastive_metrics(logits, labels) -> Dict[str, tf.Tensor]:
  """Contrastive accuracy and entropy from ``contrastive_loss``'s ``logits_ab, labels``.

  Returns a dict of float32 scalars: ``accuracy`` = fraction of anchors whose arg-max key
  is their positive; ``entropy`` = mean over anchors of the entropy (nats) of
  ``softmax(logits)`` over the other-view keys.
  """
  logits = tf.cast(logits, tf.float32)
  labels = tf.cast(labels, tf.int64)
  accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=1), labels), tf.float32))
  log_p = tf.nn.log_softmax(logits, axis=1)
  entropy = -tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * log_p, axis=1))
  return {"accuracy": accuracy, "entropy": entropy}


def masked_sigmoid_cross_entropy(labels, logits, mask=None) -> tf.Tensor:
  """Per-example sigmoid cross-entropy summed over the unmasked outputs.

  Args:
    labels: ``[B, K]`` targets in [0, 1] (soft targets allowed, e.g. after MixUp).
    logits: ``[B, K]`` logits.
    mask: ``[B, K]`` (1 = use, 0 = ignore) or None for all ones.

  Returns:
    ``[B]`` float32: ``sum_k mask[b,k] * BCE(labels[b,k], logits[b,k])``. Summing (rather
    than averaging over unmasked outputs) keeps each label's gradient independent of how
    many other labels of the example are masked, matches the softmax loss's sum over K,
    and gives 0 (not 0/0) for a fully masked example.
  """
  labels = tf.cast(labels, tf.float32)
  logits = tf.cast(logits, tf.float32)
  terms = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
  if mask is not None:
    terms = terms * tf.cast(mask, tf.float32)
  return tf.reduce_sum(terms, axis=-1)


def softmax_cross_entropy(labels, logits, weights=None) -> tf.Tensor:
  """Per-example softmax cross-entropy with one-hot or soft (MixUp) targets.

  Args:
    labels: ``[B, K]`` rows summing to 1 (one-hot or soft).
    logits: ``[B, K]`` logits.
    weights: optional ``[B]`` per-example weights (0 drops an example).

  Returns:
    ``[B]`` float32 ``-sum_k labels[b,k] * log_softmax(logits)[b,k]`` (times weights).
  """
  labels = tf.cast(labels, tf.float32)
  logits = tf.cast(logits, tf.float32)
  per_example = -tf.reduce_sum(labels * tf.nn.log_softmax(logits, axis=-1), axis=-1)
  if weights is not None:
    per_example = per_example * tf.cast(weights, tf.float32)
  return per_example


TASKS = LABELLED_TASKS


def classification_loss(task: str, labels, logits, mask=None) -> tf.Tensor:
  """Per-example ``[B]`` loss for a task type (see module docstring for the reduction).

  ``multilabel`` / ``binary`` (K = 1): :func:`masked_sigmoid_cross_entropy`.
  ``multiclass``: :func:`softmax_cross_entropy` on one-hot/soft labels; an example is kept
  when any entry of its mask row is 1 (the row weight is ``max_k mask[b,k]``), so an
  unlabelled example with an all-zero mask contributes nothing.
  """
  if task in ("multilabel", "binary"):
    return masked_sigmoid_cross_entropy(labels, logits, mask)
  if task == "multiclass":
    weights = None if mask is None else tf.reduce_max(tf.cast(mask, tf.float32), axis=-1)
    return softmax_cross_entropy(labels, logits, weights)
  raise ConfigError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
