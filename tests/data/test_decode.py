"""Decoding by magic bytes: PNG 8/16-bit, JPEG (grey/RGB/CMYK), DICOM, downscaling."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import image_files as F
from remedis_tf.data import decode
from remedis_tf.data.dicom import DicomOptions
from remedis_tf.errors import ConfigError, DataError

# Tolerances here (docs/testing.md):
# derived. Decoding is integer work plus one float32 scaling: v/255 or v/65535 rounded to
# float32 is within 2^-24 relative (<= 6e-8 on [0, 1]) of the float64 quotient, so atol 1e-7
# (and 1e-6 where DICOM rescale slope/intercept/window add a few float32 operations, each
# <= 2^-24 relative) holds on any CPU. JPEG: lossy, and decoders (libjpeg-turbo in TF, PIL)
# may differ by a grey level or two after IDCT/upsampling; atol 0.03 (~8 levels) against PIL
# and 0.04/0.08 against the source pixels bound JPEG's own quantisation error on these smooth
# ramps (a channel swap or missing CMYK inversion is off by > 0.3). Area-downscaled ramps:
# the ramp's box means, 0.03 covers JPEG error and the box alignment at the edges.

RNG = np.random.RandomState(0)


def _graph_decode(data: bytes, **kw) -> np.ndarray:
  """Decode inside a tf.data map (graph mode), the way pipelines use it."""
  ds = tf.data.Dataset.from_tensors(tf.constant(data)).map(
      lambda b: decode.decode_image_bytes(b, **kw))
  return next(iter(ds)).numpy()


def test_png_8bit_grey_rgb_rgba_exact():
  grey = RNG.randint(0, 256, (9, 7)).astype(np.uint8)
  rgb = RNG.randint(0, 256, (9, 7, 3)).astype(np.uint8)
  rgba = RNG.randint(0, 256, (9, 7, 4)).astype(np.uint8)
  out = _graph_decode(F.png_bytes(grey))
  assert out.shape == (9, 7, 3) and out.dtype == np.float32
  for c in range(3):
    np.testing.assert_allclose(out[..., c], grey / 255.0, atol=1e-7)
  np.testing.assert_allclose(_graph_decode(F.png_bytes(rgb)), rgb / 255.0, atol=1e-7)
  np.testing.assert_allclose(_graph_decode(F.png_bytes(rgba)), rgba[..., :3] / 255.0, atol=1e-7)


def test_png_16bit_full_precision():
  # Values that differ only below 8-bit resolution must stay distinct.
  grey = np.array([[0, 1, 2, 257], [40000, 40001, 65534, 65535]], np.uint16)
  out = _graph_decode(F.png_bytes(grey))
  np.testing.assert_allclose(out[..., 1], grey / 65535.0, rtol=0, atol=1e-7)
  assert out[0, 0, 0] < out[0, 1, 0] < out[0, 2, 0]
  rgb16 = RNG.randint(0, 65536, (5, 6, 3)).astype(np.uint16)
  np.testing.assert_allclose(_graph_decode(F.png16_rgb_bytes(rgb16)), rgb16 / 65535.0,
                             atol=1e-7)


def test_jpeg_grey_rgb_cmyk():
  smooth = np.tile(np.linspace(0, 255, 32), (24, 1))
  rgb = np.stack([smooth, smooth[::-1], np.full_like(smooth, 90)], -1).astype(np.uint8)
  grey_out = _graph_decode(F.jpeg_bytes(rgb[..., 0]))
  assert grey_out.shape == (24, 32, 3)
  np.testing.assert_array_equal(grey_out[..., 0], grey_out[..., 2])
  np.testing.assert_allclose(grey_out[..., 0], rgb[..., 0] / 255.0, atol=0.04)
  for mode in (None, "CMYK"):
    data = F.jpeg_bytes(rgb, mode=mode)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) / 255.0
    out = _graph_decode(data)
    assert out.shape == (24, 32, 3)
    np.testing.assert_allclose(out, ref, atol=0.03)  # decoders differ by rounding only
    np.testing.assert_allclose(out, rgb / 255.0, atol=0.08)


def _dicom_reference(stored, bits, slope=1.0, intercept=0.0, mono1=False, window=None,
                     signed=False, mode="range", function="LINEAR"):
  """Independent numpy statement of the documented grey mapping.

  ``window``: (center, width) applied with ``function``; otherwise ``mode`` "range"
  (min–max of the rescaled image) or "bits" (the rescaled stored bit range).
  """
  x = stored.astype(np.float64) * slope + intercept
  if window is not None:
    c, w = window
    if function == "LINEAR":
      y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0,
                   np.where(x > c - 0.5 + (w - 1) / 2, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5))
    elif function == "LINEAR_EXACT":
      y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, (x - c) / w + 0.5))
    else:  # SIGMOID
      y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
  elif mode == "bits":
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    y = (x - lo) / (hi - lo)
  else:
    y = (x - x.min()) / (x.max() - x.min())
  return 1.0 - y if mono1 else y


@pytest.mark.parametrize("intensity", ["voi", "range", "bits"])
@pytest.mark.parametrize("mono1", [False, True])
@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 12), (np.uint16, 16)])
def test_dicom_without_window(intensity, mono1, dtype, bits):
  # A file without VOI: "voi" falls back to "range" (this image's min–max).
  stored = RNG.randint(0, 2 ** bits, (6, 5)).astype(dtype)
  stored[0, 0], stored[0, 1] = 1000 % 2 ** bits, 1001 % 2 ** bits  # 1-step difference kept
  data = F.dicom_bytes(stored, bits_stored=bits,
                       photometric="MONOCHROME1" if mono1 else "MONOCHROME2")
  want = _dicom_reference(stored, bits, mono1=mono1,
                          mode="bits" if intensity == "bits" else "range")
  out = _graph_decode(data, dicom_options=DicomOptions(intensity=intensity))
  assert out.shape == (6, 5, 3)
  np.testing.assert_allclose(out[..., 0], want, atol=1e-6)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  assert out[0, 0, 0] != out[0, 1, 0]
  if intensity != "bits":
    assert {out[..., 0].min(), out[..., 0].max()} == {0.0, 1.0}
  np.testing.assert_allclose(decode.decode_bytes_numpy(
      data, dicom_options=DicomOptions(intensity=intensity)), out, atol=1e-7)


def test_dicom_range_uses_image_range_not_bits():
  # 12-bit CT-like data in a narrow band: "bits" squeezes it, "range" (the fallback) spans [0, 1].
  stored = RNG.randint(1000, 1200, (8, 8)).astype(np.uint16)
  data = F.dicom_bytes(stored, bits_stored=16, slope=1.0, intercept=-1024.0)
  bits_out = _graph_decode(data, dicom_options=DicomOptions(intensity="bits"))[..., 0]
  assert np.ptp(bits_out) < 0.01
  out = _graph_decode(data)[..., 0]
  np.testing.assert_allclose(out, _dicom_reference(stored, 16, 1.0, -1024.0), atol=1e-6)
  constant = F.dicom_bytes(np.full((3, 3), 7, np.uint16), bits_stored=12)
  np.testing.assert_array_equal(_graph_decode(constant), 0.0)


@pytest.mark.parametrize("mono1", [False, True])
def test_dicom_rescale_window_and_signed(mono1):
  stored = RNG.randint(0, 4096, (8, 8)).astype(np.uint16)
  photometric = "MONOCHROME1" if mono1 else "MONOCHROME2"
  data = F.dicom_bytes(stored, bits_stored=12, slope=2.0, intercept=-1024.0,
                       window=(40.0, 400.0), photometric=photometric)
  # Default: the file's window, after the rescale, before the MONOCHROME1 inversion.
  np.testing.assert_allclose(
      _graph_decode(data)[..., 0],
      _dicom_reference(stored, 12, 2.0, -1024.0, mono1, window=(40.0, 400.0)), atol=1e-6)
  np.testing.assert_allclose(
      _graph_decode(data, dicom_options=DicomOptions(intensity="range"))[..., 0],
      _dicom_reference(stored, 12, 2.0, -1024.0, mono1), atol=1e-6)
  np.testing.assert_allclose(
      _graph_decode(data, dicom_options=DicomOptions(intensity="bits"))[..., 0],
      _dicom_reference(stored, 12, 2.0, -1024.0, mono1, mode="bits"), atol=1e-6)
  # An explicit window wins over the file's window, whatever the intensity mode.
  for intensity in ("voi", "range", "bits"):
    explicit = DicomOptions(intensity=intensity, window_center=-600.0, window_width=1500.0)
    np.testing.assert_allclose(
        _graph_decode(data, dicom_options=explicit)[..., 0],
        _dicom_reference(stored, 12, 2.0, -1024.0, mono1, window=(-600.0, 1500.0)), atol=1e-6)
  signed = RNG.randint(-2048, 2048, (4, 4)).astype(np.int16)
  np.testing.assert_allclose(
      _graph_decode(F.dicom_bytes(signed, bits_stored=12, signed=True),
                    dicom_options=DicomOptions(intensity="bits"))[..., 0],
      _dicom_reference(signed, 12, signed=True, mode="bits"), atol=1e-6)
  with pytest.raises(ConfigError, match="both window_center and window_width"):
    DicomOptions(window_center=1.0)
  with pytest.raises(ConfigError, match="intensity must be one of"):
    DicomOptions(intensity="auto")


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_dicom_voi_lut_functions_and_first_of_several_windows(function):
  stored = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
  data = F.dicom_bytes(stored, window=([100.0, 30.0], [60.0, 10.0]), voi_function=function)
  np.testing.assert_allclose(
      _graph_decode(data)[..., 0],
      _dicom_reference(stored, 8, window=(100.0, 60.0), function=function), atol=1e-6)


@pytest.mark.parametrize("function,width", [("LINEAR", 0.5), ("LINEAR_EXACT", 0.0),
                                            ("SIGMOID", -3.0)])
def test_dicom_unusable_file_window_falls_back_to_range(function, width):
  stored = RNG.randint(0, 256, (5, 5)).astype(np.uint8)
  data = F.dicom_bytes(stored, window=(100.0, width), voi_function=function)
  np.testing.assert_allclose(_graph_decode(data)[..., 0], _dicom_reference(stored, 8),
                             atol=1e-6)


def test_dicom_unknown_voi_function_is_a_data_error():
  data = F.dicom_bytes(np.zeros((2, 2), np.uint8), window=(1.0, 2.0), voi_function="GAMMA")
  with pytest.raises(DataError, match="unsupported DICOM VOILUTFunction 'GAMMA'"):
    decode.decode_bytes_numpy(data, "x.dcm")


def test_dicom_voi_and_modality_lut_sequences():
  # LUT look-up: inputs below the first mapped value take entry 0, above the table the last.
  stored = np.array([[0, 9, 10, 11], [12, 13, 14, 200]], np.uint16)
  voi = (10, 12, [0, 1000, 2000, 4095])  # first mapped value 10, 12-bit entries
  want = np.array([[0, 0, 0, 1000], [2000, 4095, 4095, 4095]]) / 4095.0
  out = _graph_decode(F.dicom_bytes(stored, bits_stored=12, voi_lut=voi,
                                    window=(5.0, 3.0)))  # the LUT wins over the window
  np.testing.assert_allclose(out[..., 0], want, atol=1e-6)
  # Modality LUT (no rescale) then the window on its output; "bits" uses the LUT's range.
  modality = (0, 16, [50 * v for v in range(16)])
  stored = np.arange(16, dtype=np.uint16).reshape(4, 4)
  data = F.dicom_bytes(stored, bits_stored=4, modality_lut=modality, window=(300.0, 201.0))
  x = 50.0 * stored
  np.testing.assert_allclose(_graph_decode(data)[..., 0],
                             np.clip((x - 299.5) / 200.0 + 0.5, 0, 1), atol=1e-6)
  np.testing.assert_allclose(
      _graph_decode(data, dicom_options=DicomOptions(intensity="bits"))[..., 0],
      x / 65535.0, atol=1e-6)


def test_dicom_rgb():
  rgb = RNG.randint(0, 256, (4, 6, 3)).astype(np.uint8)
  out = _graph_decode(F.dicom_bytes(rgb, photometric="RGB"))
  np.testing.assert_allclose(out, rgb / 255.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["png", "jpeg", "dicom"])
def test_max_size_downscales_keeping_aspect(kind):
  grey = np.tile(np.linspace(0, 255, 400), (250, 1)).astype(np.uint8)
  data = {"png": F.png_bytes(grey), "jpeg": F.jpeg_bytes(grey),
          "dicom": F.dicom_bytes(grey)}[kind]
  out = _graph_decode(data, max_size=40)
  assert out.shape == (25, 40, 3)
  # Area resampling of a horizontal ramp stays a ramp with the same range.
  np.testing.assert_allclose(out[12, :, 0], np.linspace(0, 1, 400).reshape(40, 10).mean(1),
                             atol=0.03)
  assert _graph_decode(data, max_size=1000).shape == (250, 400, 3)  # never upscales


def test_large_jpeg_uses_dct_reduction_and_matches_area_resize():
  big = np.tile(np.linspace(0, 255, 2048), (1024, 1)).astype(np.uint8)
  out = _graph_decode(F.jpeg_bytes(big), max_size=64)
  assert out.shape == (32, 64, 3)
  np.testing.assert_allclose(out[16, :, 0], np.linspace(0, 1, 2048).reshape(64, 32).mean(1),
                             atol=0.03)


def test_load_image_graph_error_names_file(tmp_path):
  bad = F.write(tmp_path / "notes.png", b"this is not an image at all")
  good = F.write(tmp_path / "ok.bin", F.png_bytes(np.zeros((3, 3), np.uint8)))
  ds = tf.data.Dataset.from_tensor_slices([good]).map(decode.load_image)
  assert next(iter(ds)).shape == (3, 3, 3)  # magic bytes, not the extension, decide
  ds = tf.data.Dataset.from_tensor_slices([bad]).map(decode.load_image)
  with pytest.raises(tf.errors.InvalidArgumentError, match="notes.png"):
    next(iter(ds))


def test_read_image_numpy_errors_name_file(tmp_path):
  with pytest.raises(DataError, match="missing.png: image file not found"):
    decode.read_image_numpy(str(tmp_path / "missing.png"))
  empty = F.write(tmp_path / "empty.png", b"")
  with pytest.raises(DataError, match="empty.png: empty image file"):
    decode.read_image_numpy(empty)
  trunc = F.write(tmp_path / "t.png", F.png_bytes(RNG.randint(0, 255, (30, 30), np.uint8))[:60])
  with pytest.raises(DataError, match="t.png: cannot decode PNG"):
    decode.read_image_numpy(trunc)
  nopix = F.write(tmp_path / "x.dcm", F.dicom_bytes(np.zeros((2, 2), np.uint8),
                                                    with_pixels=False))
  with pytest.raises(DataError, match="x.dcm: DICOM file has no pixel data"):
    decode.read_image_numpy(nopix)
