"""Matching a set's label columns to a model's, by name."""

import dataclasses

import pytest

from remedis_tf.data.label_alignment import align_labels, missing_labels
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.errors import DataError


def test_align_labels_reorders_and_drops_columns():
  rec = Record("x.png", "x", (1.0, 0.0, 1.0), (1.0, 0.0, 1.0), patient_id="p")
  m = Manifest((rec,), ("A", "B", "C"), "multilabel", "m")
  out = align_labels(m, ("C", "A"), "multilabel")
  assert out.label_names == ("C", "A")
  assert out.records[0].labels == (1.0, 1.0) and out.records[0].mask == (1.0, 1.0)
  out = align_labels(m, ("B",), "binary")
  assert out.task == "binary" and out.records[0].mask == (0.0,)
  with pytest.raises(DataError, match="'D'"):
    align_labels(m, ("D",), "binary")
  with pytest.raises(DataError, match="multiclass"):
    align_labels(m, ("A", "B", "C"), "multiclass")
  unlabelled = dataclasses.replace(m, label_names=(), task="unlabelled")
  with pytest.raises(DataError, match="no labels"):
    align_labels(unlabelled, ("A",), "binary")


def test_allow_missing_keeps_the_shared_labels_in_model_order():
  rec = Record("x.png", "x", (1.0, 0.0), (1.0, 1.0), patient_id="p")
  m = Manifest((rec,), ("C", "A"), "multilabel", "m")
  with pytest.raises(DataError, match=r"lacks the model's label\(s\) \['B'\]"):
    align_labels(m, ("A", "B", "C"), "multilabel")
  out = align_labels(m, ("A", "B", "C"), "multilabel", allow_missing=True)
  assert out.label_names == ("A", "C") and out.records[0].labels == (0.0, 1.0)
  assert out.task == "multilabel"
  assert missing_labels(m, ("A", "B", "C")) == ["B"]
  with pytest.raises(DataError, match="none of the model's labels"):
    align_labels(m, ("B", "D"), "multilabel", allow_missing=True)
  # A multi-class set must have every class, whatever allow_missing says.
  mc = Manifest((rec,), ("A", "C"), "multiclass", "m")
  with pytest.raises(DataError, match="lacks"):
    align_labels(mc, ("A", "B", "C"), "multiclass", allow_missing=True)
