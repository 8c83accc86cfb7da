"""DICOM → float32 image in ``[0, 1]`` with pydicom (runs in Python, e.g. inside
``tf.numpy_function``).

Grey-scale pipeline, in DICOM's own order: stored values → modality LUT (RescaleSlope /
RescaleIntercept) → either a linear VOI window (optional) or a min/max scaling over the
whole stored bit range (BitsStored, signed or not) mapped through the same rescale →
MONOCHROME1 inverted so that bright always means dense. Computation is float64 until the
final cast, so 12/16-bit data keeps its full precision. Multi-frame files yield frame 0.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Optional, Tuple

import numpy as np

from remedis_tf.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class DicomOptions:
  """How grey values are mapped to ``[0, 1]``.

  Attributes:
    apply_window: use a VOI window: (window_center, window_width) when both are given,
      else the file's first WindowCenter/WindowWidth; a file without a window falls back
      to the bit-range scaling.
    window_center, window_width: explicit window in rescaled units (e.g. HU); width >= 1.
  """
  apply_window: bool = False
  window_center: Optional[float] = None
  window_width: Optional[float] = None

  def __post_init__(self):
    if (self.window_center is None) != (self.window_width is None):
      raise ConfigError("DicomOptions: give both window_center and window_width, or neither")
    if self.window_width is not None and self.window_width < 1:
      raise ConfigError(f"DicomOptions: window_width must be >= 1, got {self.window_width}")


def _first(value) -> Optional[float]:
  if value is None:
    return None
  try:
    return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) \
        else float(value)
  except (TypeError, ValueError, IndexError):
    return None


def apply_linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
  """DICOM PS3.3 C.11.2.1.2.1 linear VOI function, output scaled to ``[0, 1]``."""
  if width < 1:
    raise DataError(f"window width must be >= 1, got {width}")
  if width == 1:
    return (x > center - 0.5).astype(np.float64)
  y = (x - (center - 0.5)) / (width - 1.0) + 0.5
  return np.clip(y, 0.0, 1.0)


def stored_range(bits_stored: int, signed: bool) -> Tuple[float, float]:
  """Smallest and largest stored value for ``bits_stored`` bits."""
  if signed:
    return -float(2 ** (bits_stored - 1)), float(2 ** (bits_stored - 1) - 1)
  return 0.0, float(2 ** bits_stored - 1)


def dataset_to_float(ds, options: DicomOptions = DicomOptions()) -> np.ndarray:
  """A pydicom Dataset → float32 ``[H, W, C]`` in ``[0, 1]``, C = 1 (grey) or 3 (colour)."""
  if "PixelData" not in ds:
    raise DataError("DICOM file has no pixel data (PixelData element missing)")
  try:
    arr = ds.pixel_array
  except Exception as e:  # pydicom raises many types (missing decoder plugin, bad length)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", str(syntax))
    hint = ""
    if syntax is not None and getattr(syntax, "is_compressed", False):
      hint = " (compressed; install a pydicom decoder plugin such as pylibjpeg)"
    raise DataError(f"cannot decode DICOM pixel data, transfer syntax {name}{hint}: "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
  samples = int(ds.get("SamplesPerPixel", 1) or 1)
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  if frames > 1:
    arr = arr[0]
  bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
  signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
  if samples == 3:
    if arr.ndim != 3 or arr.shape[-1] != 3:
      raise DataError(f"DICOM colour image has unexpected shape {arr.shape}")
    lo, hi = stored_range(bits, signed)
    out = (arr.astype(np.float64) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
  if samples != 1 or arr.ndim != 2:
    raise DataError(f"DICOM image with {samples} samples per pixel and shape {arr.shape} "
                    "is not supported")
  slope = _first(ds.get("RescaleSlope", 1.0))
  intercept = _first(ds.get("RescaleIntercept", 0.0))
  slope = 1.0 if slope is None else slope
  intercept = 0.0 if intercept is None else intercept
  x = arr.astype(np.float64) * slope + intercept

  center = width = None
  if options.apply_window:
    if options.window_center is not None:
      center, width = options.window_center, options.window_width
    else:
      center = _first(ds.get("WindowCenter"))
      width = _first(ds.get("WindowWidth"))
      if center is None or width is None or width < 1:
        center = width = None  # no usable window in the file: bit-range scaling
  if center is not None:
    y = apply_linear_window(x, center, width)
  else:
    lo, hi = stored_range(bits, signed)
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    y = np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)
  if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
    y = 1.0 - y
  return y.astype(np.float32)[..., None]


def decode_dicom_bytes(data: bytes, options: DicomOptions = DicomOptions()) -> np.ndarray:
  """Encoded DICOM bytes → float32 ``[H, W, C]`` in ``[0, 1]`` (C = 1 or 3).

  Raises DataError (message without the file name; callers add it) for anything that is
  not a decodable DICOM image.
  """
  import pydicom  # pylint: disable=g-import-not-at-top
  from pydicom.errors import InvalidDicomError  # pylint: disable=g-import-not-at-top
  try:
    ds = pydicom.dcmread(io.BytesIO(bytes(data)))
  except InvalidDicomError as e:
    raise DataError(f"not a DICOM file ({e})") from e
  except Exception as e:  # truncated / malformed element streams raise assorted types
    raise DataError(f"unreadable DICOM file ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''})") from e
  try:
    return dataset_to_float(ds, options)
  except DataError:
    raise
  except Exception as e:  # malformed attribute values (e.g. text where numbers belong)
    raise DataError(f"malformed DICOM image attributes ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''})") from e
