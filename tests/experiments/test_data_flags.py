"""Data-source flags: the DICOM intensity flags reach the Manifest and the pipelines."""

import os
import sys

import numpy as np
import pytest
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "data"))
import image_files as F  # noqa: E402  (the data tests' DICOM writer)

from experiments import data_flags  # noqa: E402
from remedis_tf.data import pipeline  # noqa: E402
from remedis_tf.data.dicom import DicomOptions  # noqa: E402
from remedis_tf.errors import ConfigError  # noqa: E402

# Tolerances here (docs/testing.md):
# derived: a bicubic resize to the same size is the identity up to float32 rounding of the
# kernel weights (sum to 1 within a few 2^-24) on values in [0, 1]: atol 1e-4 >> 1e-6.

STORED = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50  # 0..3150, 12-bit
FILE_WINDOW = (1000.0, 1001.0)


def _flags(tmp_path, *args):
  fv = flags.FlagValues()
  data_flags.define_data_flags("train_", fv)
  fv(["prog", "--train_source=folder", f"--train_folder={tmp_path}", *args])
  return fv


def _decoded(manifest):
  ds = pipeline.eval_dataset(manifest, image_size=8, batch_size=1, crop_fraction=1.0)
  return next(iter(ds))["image"].numpy()[0, ..., 0]


@pytest.fixture
def dicom_folder(tmp_path):
  F.write(tmp_path / "a.dcm", F.dicom_bytes(STORED, bits_stored=12, window=FILE_WINDOW))
  return tmp_path


@pytest.mark.parametrize("args,options,want", [
    ((), DicomOptions(), np.clip((STORED - 999.5) / 1000.0 + 0.5, 0, 1)),
    (("--train_dicom_intensity=range",), DicomOptions("range"), STORED / 3150.0),
    (("--train_dicom_intensity=bits",), DicomOptions("bits"), STORED / 4095.0),
    (("--train_dicom_intensity=bits", "--train_dicom_window_center=2000",
      "--train_dicom_window_width=1001"), DicomOptions("bits", 2000.0, 1001.0),
     np.clip((STORED - 1999.5) / 1000.0 + 0.5, 0, 1)),
])
def test_dicom_flags_reach_manifest_and_pipeline(dicom_folder, args, options, want):
  manifest = data_flags.manifest_from_flags("train_", _flags(dicom_folder, *args))
  assert manifest.dicom == options
  np.testing.assert_allclose(_decoded(manifest), want, atol=1e-4)  # bicubic at same size


@pytest.mark.parametrize("args,message", [
    (("--train_dicom_window_center=40",), "go together: got only --train_dicom_window_center"),
    (("--train_dicom_window_width=400",), "go together: got only --train_dicom_window_width"),
    (("--train_dicom_window_center=40", "--train_dicom_window_width=0.5"),
     "--train_dicom_window_width=0.5: must be >= 1"),
])
def test_bad_dicom_window_flags_name_the_flag(dicom_folder, args, message):
  with pytest.raises(ConfigError, match=message):
    data_flags.manifest_from_flags("train_", _flags(dicom_folder, *args))


def test_bad_intensity_value_is_rejected_by_the_parser(tmp_path):
  with pytest.raises(flags.IllegalFlagValueError):
    _flags(tmp_path, "--train_dicom_intensity=auto")
