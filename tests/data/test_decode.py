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
                     signed=False):
  """Independent numpy statement of the documented grey mapping."""
  x = stored.astype(np.float64) * slope + intercept
  if window is not None:
    c, w = window
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0,
                 np.where(x > c - 0.5 + (w - 1) / 2, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5))
  else:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    y = (x - lo) / (hi - lo)
  return 1.0 - y if mono1 else y


@pytest.mark.parametrize("mono1", [False, True])
@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 12), (np.uint16, 16)])
def test_dicom_bit_range_scaling(mono1, dtype, bits):
  stored = RNG.randint(0, 2 ** bits, (6, 5)).astype(dtype)
  stored[0, 0], stored[0, 1] = 1000 % 2 ** bits, 1001 % 2 ** bits  # 1-step difference kept
  data = F.dicom_bytes(stored, bits_stored=bits,
                       photometric="MONOCHROME1" if mono1 else "MONOCHROME2")
  want = _dicom_reference(stored, bits, mono1=mono1)
  out = _graph_decode(data)
  assert out.shape == (6, 5, 3)
  np.testing.assert_allclose(out[..., 0], want, atol=1e-6)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  assert out[0, 0, 0] != out[0, 1, 0]
  np.testing.assert_allclose(decode.decode_bytes_numpy(data), out, atol=1e-7)


def test_dicom_rescale_window_and_signed():
  stored = RNG.randint(0, 4096, (8, 8)).astype(np.uint16)
  data = F.dicom_bytes(stored, bits_stored=12, slope=2.0, intercept=-1024.0,
                       window=(40.0, 400.0))
  np.testing.assert_allclose(_graph_decode(data)[..., 0],
                             _dicom_reference(stored, 12, 2.0, -1024.0), atol=1e-6)
  np.testing.assert_allclose(
      _graph_decode(data, dicom_options=DicomOptions(apply_window=True))[..., 0],
      _dicom_reference(stored, 12, 2.0, -1024.0, window=(40.0, 400.0)), atol=1e-6)
  explicit = DicomOptions(apply_window=True, window_center=-600.0, window_width=1500.0)
  np.testing.assert_allclose(
      _graph_decode(data, dicom_options=explicit)[..., 0],
      _dicom_reference(stored, 12, 2.0, -1024.0, window=(-600.0, 1500.0)), atol=1e-6)
  # No window in the file: apply_window falls back to the bit range.
  plain = F.dicom_bytes(stored, bits_stored=12)
  np.testing.assert_allclose(
      _graph_decode(plain, dicom_options=DicomOptions(apply_window=True))[..., 0],
      _dicom_reference(stored, 12), atol=1e-6)
  signed = RNG.randint(-2048, 2048, (4, 4)).astype(np.int16)
  np.testing.assert_allclose(
      _graph_decode(F.dicom_bytes(signed, bits_stored=12, signed=True))[..., 0],
      _dicom_reference(signed, 12, signed=True), atol=1e-6)
  with pytest.raises(ConfigError):
    DicomOptions(apply_window=True, window_center=1.0)


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
