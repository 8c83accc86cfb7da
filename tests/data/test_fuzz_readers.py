"""Fuzzing: random CSV text and random bytes give valid data or a RemedisError only."""

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st

import image_files as F
from remedis_tf.data import csv_reader, decode
from remedis_tf.errors import RemedisError

CELL = st.sampled_from(["1", "0", "-1", "", "1.0", "-1.0", "nan", "x", '"a,b"', '"', "\x00",
                        "2", " 1 ", "\ufeff", "é"])
ROW = st.lists(CELL, min_size=0, max_size=5).map(",".join)
CSV_TEXT = st.one_of(
    st.lists(ROW, min_size=0, max_size=6).map(lambda rows: "Path,A,B\n" + "\n".join(rows)),
    st.text(max_size=200))

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@SETTINGS
@given(text=CSV_TEXT, policy=st.sampled_from(["ignore", "ones", "zeros"]))
def test_csv_reader_never_crashes(tmp_path, text, policy):
  path = tmp_path / "fuzz.csv"
  path.write_bytes(text.encode("utf-8", "surrogatepass"))
  try:
    m = csv_reader.read_csv_manifest(str(path), data_root="/r", path_column="Path",
                                     label_columns=["A", "B"], task="multilabel",
                                     uncertain_policy=policy)
  except RemedisError as e:
    assert "\n" not in str(e)
    return
  labels, mask = m.label_matrix(), m.mask_matrix()
  assert np.isin(labels, [0.0, 1.0]).all() and np.isin(mask, [0.0, 1.0]).all()


_VALID = [F.png_bytes(np.full((3, 4), 7, np.uint8)), F.jpeg_bytes(np.zeros((8, 8), np.uint8)),
          F.dicom_bytes(np.arange(6, dtype=np.uint16).reshape(2, 3), bits_stored=12)]


def _mutated():
  """Random bytes, and valid files with random prefixes / truncation / overwritten bytes."""
  def mutate(args):
    base, cut, pos, junk = args
    data = bytearray(base[:max(0, min(cut, len(base)))] if cut >= 0 else base)
    if junk and data:
      p = pos % len(data)
      data[p:p + len(junk)] = junk
    return bytes(data)
  return st.one_of(
      st.binary(max_size=300),
      st.binary(max_size=200).map(lambda b: decode.PNG_MAGIC + b),
      st.binary(max_size=200).map(lambda b: b"\x00" * 128 + b"DICM" + b),
      st.tuples(st.sampled_from(_VALID), st.integers(-1, 400), st.integers(0, 10_000),
                st.binary(max_size=8)).map(mutate))


@SETTINGS
@given(data=_mutated())
def test_decode_never_crashes(data):
  try:
    image = decode.decode_bytes_numpy(data, "fuzz")
  except RemedisError as e:
    assert str(e).startswith("fuzz: ")
    return
  assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.float32
  assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


@settings(max_examples=15, deadline=None)
@given(data=_mutated())
def test_graph_decode_raises_only_tf_errors(data):
  """In graph mode any failure is a tf.errors.OpError the pipeline can surface."""
  try:
    image = decode.decode_image_bytes(tf.constant(data)).numpy()
  except (tf.errors.OpError, RemedisError):
    return
  assert image.shape[-1] == 3 and np.isfinite(image).all()
