"""DICOM → float32 image in ``[0, 1]`` with pydicom (runs in Python, e.g. inside
``tf.numpy_function``).

Grey-scale pipeline, in DICOM's own order (PS3.3 C.11 / PS3.4 N.2.1):

1. modality LUT: the file's Modality LUT Sequence, else RescaleSlope / RescaleIntercept
   (e.g. stored values → Hounsfield units);
2. VOI transform to ``[0, 1]``, chosen by :class:`DicomOptions`:

   * an explicit window (``window_center``/``window_width``) always wins (LINEAR function);
   * ``intensity="voi"`` (default): the file's first VOI LUT Sequence item (output divided
     by its ``2**bits - 1``), else its first WindowCenter/WindowWidth with the file's
     VOILUTFunction (LINEAR, LINEAR_EXACT or SIGMOID), both as pydicom's ``apply_voi_lut``
     with ``prefer_lut=True``; a file without a usable VOI (none, or a width the function
     does not allow) falls back to ``"range"``;
   * ``intensity="range"``: min–max of this image's modality values, so the darkest
     pixel is 0 and the brightest 1 (nothing clipped; a constant image gives 0);
   * ``intensity="bits"``: min–max of the whole stored bit range (BitsStored, signed or
     not) mapped through the modality LUT: the behaviour before VOI support, kept for
     reproducing earlier runs; most CT/MR images then use a few % of ``[0, 1]``;

3. MONOCHROME1 inverted (``1 - y``) so that bright always means dense.

Colour images (RGB, YBR) have no VOI: they are scaled over the stored bit range. Float64
until the final cast, so 12/16-bit data keeps its full precision. Multi-frame files yield
frame 0.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Optional, Tuple

import numpy as np

from remedis_tf.errors import ConfigError, DataError

INTENSITY_MODES = ("voi", "range", "bits")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclasses.dataclass(frozen=True)
class DicomOptions:
  """How grey values are mapped to ``[0, 1]`` (see the module docstring for the order).

  Attributes:
    intensity: "voi" (the file's VOI LUT or window, else "range"), "range" (this image's
      min–max) or "bits" (the stored bit range).
    window_center, window_width: explicit LINEAR window in modality units (e.g. HU; width
      >= 1); when given it is used for every grey file, whatever ``intensity`` says.
  """
  intensity: str = "voi"
  window_center: Optional[float] = None
  window_width: Optional[float] = None

  def __post_init__(self):
    if self.intensity not in INTENSITY_MODES:
      raise ConfigError(f"DicomOptions: intensity must be one of {', '.join(INTENSITY_MODES)}"
                        f", got {self.intensity!r}")
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


def apply_window(x: np.ndarray, center: float, width: float,
                 function: str = "LINEAR") -> np.ndarray:
  """DICOM VOI window function with output in ``[0, 1]`` (float64, same shape as ``x``).

  ``function``: LINEAR (PS3.3 C.11.2.1.2.1, width >= 1), LINEAR_EXACT (C.11.2.1.3.2,
  width > 0) or SIGMOID (C.11.2.1.3.1, width > 0). ``x``, ``center`` and ``width`` are in
  modality units. Raises DataError for a width the function does not allow.
  """
  x = np.asarray(x, np.float64)
  if function == "SIGMOID":
    if width <= 0:
      raise DataError(f"DICOM SIGMOID window width must be > 0, got {width}")
    return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
  if function == "LINEAR":
    if width < 1:
      raise DataError(f"DICOM LINEAR window width must be >= 1, got {width}")
    center, width = center - 0.5, width - 1.0
  elif function == "LINEAR_EXACT":
    if width <= 0:
      raise DataError(f"DICOM LINEAR_EXACT window width must be > 0, got {width}")
  else:
    raise DataError(f"unsupported DICOM VOILUTFunction {function!r} (expected one of "
                    f"{', '.join(VOI_FUNCTIONS)})")
  below, above = x <= center - width / 2, x > center + width / 2
  inside = ~(below | above)
  y = above.astype(np.float64)
  if width > 0:  # width 0 (LINEAR width 1) is a step: nothing lies strictly inside
    y[inside] = (x[inside] - center) / width + 0.5
  return y


def stored_range(bits_stored: int, signed: bool) -> Tuple[float, float]:
  """Smallest and largest stored value for ``bits_stored`` bits."""
  if signed:
    return -float(2 ** (bits_stored - 1)), float(2 ** (bits_stored - 1) - 1)
  return 0.0, float(2 ** bits_stored - 1)


def _lut(ds, item) -> Tuple[np.ndarray, int, int]:
  """A Modality/VOI LUT Sequence item → (entries float64, first mapped value, bits/entry)."""
  descriptor = [int(v) for v in item.LUTDescriptor]
  if len(descriptor) != 3:
    raise DataError(f"DICOM LUTDescriptor has {len(descriptor)} values, expected 3")
  entries, first, bits = descriptor[0] or 2 ** 16, descriptor[1], descriptor[2]
  raw = item["LUTData"].value
  if isinstance(raw, (bytes, bytearray)):  # OW: 16-bit words in the file's byte order
    little = getattr(ds, "original_encoding", (None, True))[1] is not False
    data = np.frombuffer(bytes(raw), "<u2" if little else ">u2")
  else:
    data = np.atleast_1d(np.asarray(raw, np.float64))
  if data.size < entries:
    raise DataError(f"DICOM LUTData has {data.size} entries, LUTDescriptor says {entries}")
  return data[:entries].astype(np.float64), first, bits


def _look_up(x: np.ndarray, lut: np.ndarray, first: int) -> np.ndarray:
  """LUT look-up (PS3.3 C.11.1.1, C.11.2.1.1): below ``first`` → entry 0, past the end →
  the last entry."""
  index = np.clip(np.floor(x) - first, 0, lut.size - 1).astype(np.int64)
  return lut[index]


def _modality(ds, stored: np.ndarray, bits: int, signed: bool
              ) -> Tuple[np.ndarray, Tuple[float, float]]:
  """Stored values → (modality values float64, modality range of the stored bit range)."""
  items = ds.get("ModalityLUTSequence")
  if items:
    lut, first, lut_bits = _lut(ds, items[0])
    return _look_up(stored, lut, first), (0.0, float(2 ** lut_bits - 1))
  slope = _first(ds.get("RescaleSlope", 1.0))
  intercept = _first(ds.get("RescaleIntercept", 0.0))
  slope = 1.0 if slope is None else slope
  intercept = 0.0 if intercept is None else intercept
  lo, hi = stored_range(bits, signed)
  lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
  return stored.astype(np.float64) * slope + intercept, (lo, hi)


def _file_voi(ds, x: np.ndarray) -> Optional[np.ndarray]:
  """The file's first VOI LUT, else its first window, applied to ``x`` → ``[0, 1]``; None if
  the file has no usable one (as pydicom's ``apply_voi_lut(prefer_lut=True)`` decides)."""
  items = ds.get("VOILUTSequence")
  if items and "LUTDescriptor" in items[0] and "LUTData" in items[0]:
    lut, first, bits = _lut(ds, items[0])
    return np.clip(_look_up(x, lut, first) / float(2 ** bits - 1), 0.0, 1.0)
  center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
  if center is None or width is None:
    return None
  function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
  usable = width >= 1 if function == "LINEAR" else width > 0
  if function in VOI_FUNCTIONS and not usable:
    return None  # a width the function does not allow: no usable window
  return apply_window(x, center, width, function)


def _min_max(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
  return np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)


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
    return _min_max(arr.astype(np.float64), *stored_range(bits, signed)).astype(np.float32)
  if samples != 1 or arr.ndim != 2:
    raise DataError(f"DICOM image with {samples} samples per pixel and shape {arr.shape} "
                    "is not supported")
  x, bit_range = _modality(ds, arr, bits, signed)
  y = None
  if options.window_center is not None:
    y = apply_window(x, options.window_center, options.window_width)
  elif options.intensity == "voi":
    y = _file_voi(ds, x)
  if y is None:
    y = _min_max(x, *(bit_range if options.intensity == "bits" else (x.min(), x.max())))
  if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
    y = 1.0 - y
  return y.astype(np.float32)[..., None]


def decode_dicom_bytes(data: bytes, options: DicomOptions = DicomOptions()) -> np.ndarray:
  """Encoded DICOM bytes → float32 ``[H, W, C]`` in ``[0, 1]`` (C = 1 or 3).

  Raises DataError (message without the file name; callers add it) for anything that is
  not a decodable DICOM image.
  """
  # pydicom is heavy and only DICOM sources need it: imported on the first DICOM decode.
  import pydicom  # pylint: disable=g-import-not-at-top
  from pydicom.errors import InvalidDicomError  # pylint: disable=g-import-not-at-top
  try:
    # Without the 128-byte preamble and "DICM" marker pydicom needs force=True.
    ds = pydicom.dcmread(io.BytesIO(bytes(data)), force=bytes(data[128:132]) != b"DICM")
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
