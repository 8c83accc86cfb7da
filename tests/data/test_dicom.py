"""DICOM grey mapping on real files (pydicom's test files and the pydicom-data wheel),
checked against pydicom's own modality LUT + VOI LUT/window, normalised to [0, 1]."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from remedis_tf.data import decode, dicom
from remedis_tf.data.dicom import DicomOptions

# Tolerances here (docs/testing.md):
# derived: stored integers through float32 rescale/window arithmetic (a few float32
# operations, each <= 2^-24 relative on values in [0, 1]) against a float64 reference, so
# atol 1e-6 (2e-6 where the window chain is longer) is >= 8x the bound on any CPU.

# (file, has a VOI LUT or window). RG1_*: 1955x1841 MONOCHROME1 15-bit chest CR, window
# 15000/30000 (pydicom-data); mlut_18 / vlut_04: Modality / VOI LUT Sequences (pydicom-data);
# examples_overlay: two windows (the first is used); the others are pydicom's own files.
REAL_FILES = [("RG1_UNCR.dcm", True), ("RG1_J2KR.dcm", True), ("CT_small.dcm", False),
              ("MR_small.dcm", True), ("JPEG2000.dcm", False), ("693_J2KI.dcm", True),
              ("examples_overlay.dcm", True), ("mlut_18.dcm", False), ("vlut_04.dcm", True)]


def _path(name: str) -> str:
  path = get_testdata_file(name, download=False)  # never reach the network from a test
  assert path is not None, (f"{name} not found: pip install pydicom-data (test dependency "
                            "in requirements.txt)")
  return path


def _read(name: str) -> bytes:
  with open(_path(name), "rb") as f:
    return f.read()


def _pydicom_reference(name: str) -> np.ndarray:
  """pydicom's apply_modality_lut → apply_voi_lut (prefer_lut) → [0, 1] → MONOCHROME1 flip.

  pydicom's windowing writes values in [y_min, y_max] (the rescaled stored range), its VOI
  LUT in [0, 2**bits - 1]; both ends are read back from pydicom by windowing two values far
  outside any window. Files without VOI: min–max of the modality values.
  """
  ds = dcmread(_path(name))
  x = apply_modality_lut(ds.pixel_array, ds)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "VOI LUT on a float input" (integer-valued here)
    y = apply_voi_lut(x, ds).astype(np.float64)
  if ds.get("VOILUTSequence"):
    y = y / (2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
  elif "WindowCenter" in ds:
    lo, hi = apply_voi_lut(np.array([-1e12, 1e12]), ds)
    y = (y - lo) / (hi - lo)
  else:
    y = (y - y.min()) / (y.max() - y.min())
  if ds.PhotometricInterpretation == "MONOCHROME1":
    y = 1.0 - y
  return y


def _span(y: np.ndarray) -> float:
  lo, hi = np.percentile(y, [1, 99])
  return float(hi - lo)


@pytest.mark.parametrize("name,has_voi", REAL_FILES)
def test_real_files_match_pydicom_voi(name, has_voi):
  data = _read(name)
  out = dicom.decode_dicom_bytes(data)
  assert out.dtype == np.float32 and out.shape[-1] == 1
  want = _pydicom_reference(name)
  np.testing.assert_allclose(out[..., 0], want, atol=2e-6)
  # Without VOI, "voi" and "range" are the same min–max scaling.
  if not has_voi:
    np.testing.assert_array_equal(dicom.decode_dicom_bytes(data, DicomOptions("range")), out)
    assert out.min() == 0.0 and out.max() == 1.0


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "CT_small.dcm", "MR_small.dcm",
                                  "693_J2KI.dcm", "examples_overlay.dcm"])
def test_real_files_use_most_of_unit_range(name):
  # Before VOI support ("bits") CT_small and MR_small used ~3% of [0, 1].
  data = _read(name)
  assert _span(dicom.decode_dicom_bytes(data)) > 0.5
  if name in ("CT_small.dcm", "MR_small.dcm"):
    assert _span(dicom.decode_dicom_bytes(data, DicomOptions("bits"))) < 0.05


def test_nuclear_medicine_without_window_spans_its_range():
  # JPEG2000.dcm (NM whole body, values -30..245, hot spots): min–max puts the darkest pixel
  # at 0 and the hottest at 1, its 1st-99th percentile span is 0.34 (was 0.0014 with "bits").
  data = _read("JPEG2000.dcm")
  out = dicom.decode_dicom_bytes(data)
  assert out.min() == 0.0 and out.max() == 1.0 and _span(out) > 0.3
  assert _span(dicom.decode_dicom_bytes(data, DicomOptions("bits"))) < 0.01


def test_chest_cr_monochrome1_j2k_equals_uncompressed_in_graph():
  # Lossless JPEG 2000 and the uncompressed file give the same image, also through the
  # graph-mode decoder (grey replicated to 3 channels) used by the tf.data pipelines.
  unc = dicom.decode_dicom_bytes(_read("RG1_UNCR.dcm"))
  ds = tf.data.Dataset.from_tensors(tf.constant(_read("RG1_J2KR.dcm"))).map(
      decode.decode_image_bytes)
  j2k = next(iter(ds)).numpy()
  assert j2k.shape == (1955, 1841, 3)
  np.testing.assert_array_equal(j2k[..., :1], unc)
  # MONOCHROME1: stored 874 (most attenuating) → brightest; the window is 15000/30000.
  stored = dcmread(_path("RG1_UNCR.dcm")).pixel_array
  i = np.unravel_index(np.argmin(stored), stored.shape)
  assert unc[i] == unc.max() and unc.max() > 0.95


def test_explicit_window_wins_on_real_ct():
  data = _read("CT_small.dcm")  # rescale intercept -1024: stored 1024 is 0 HU
  out = dicom.decode_dicom_bytes(data, DicomOptions("voi", window_center=40.0,
                                                    window_width=400.0))
  hu = dcmread(_path("CT_small.dcm")).pixel_array.astype(np.float64) - 1024.0
  want = np.clip((hu - 39.5) / 399.0 + 0.5, 0.0, 1.0)
  np.testing.assert_allclose(out[..., 0], want, atol=1e-6)
