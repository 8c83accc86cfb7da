"""Image decoding to float32 ``[H, W, 3]`` in ``[0, 1]``, by magic bytes, not extension.

* PNG 8/16-bit: decoded as uint16 so 16-bit data keeps full precision (8-bit values map
  exactly to v/255).
* JPEG: grey, RGB and CMYK (converted to RGB by the decoder).
* DICOM: pydicom inside ``tf.numpy_function`` (see :mod:`remedis_tf.data.dicom`).

Grey images are replicated to 3 channels; alpha is dropped. ``max_size`` downscales
(area resampling, aspect kept, never upscales) so the longest side is at most
``max_size``; JPEGs are first reduced in the DCT domain (ratio 2/4/8) so a huge JPEG is
never fully materialised, other formats are resized right after decoding, before the
3-channel float copy is made.

Graph-mode decode errors cannot name the file reliably; run
:func:`remedis_tf.data.validate.validate_manifest` first to get file names and CSV rows.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Optional

import numpy as np
from PIL import Image
import tensorflow as tf

from remedis_tf.data import dicom as dicom_lib
from remedis_tf.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DICOM_MAGIC = b"DICM"  # at byte offset 128, after the preamble
FORMATS = ("png", "jpeg", "dicom")
PNG_END = b"IEND"
JPEG_END = b"\xff\xd9"
# Training pipelines never need more pixels than this many times the model input side
# (a 0.08-area random crop of such an image is still >= the input side), and never
# downscale images below MIN_WORKING_SIZE, so ordinary datasets decode unchanged.
WORKING_SIZE_FACTOR = 4
MIN_WORKING_SIZE = 1024


def working_size(image_size: int) -> int:
  """Longest side (pixels) images are downscaled to right after decoding in training and
  evaluation pipelines for an ``image_size`` model input: ``max(4·image_size, 1024)``.

  Bounds decode memory for huge images (e.g. 12000² scans) without touching normal ones.
  """
  return max(WORKING_SIZE_FACTOR * int(image_size), MIN_WORKING_SIZE)


def truncation_reason(fmt: str, tail: bytes) -> Optional[str]:
  """A reason when the last bytes of a PNG/JPEG file show it was cut short, else None.

  PNG files end with an IEND chunk and JPEG files with an EOI marker (FF D9); ``tail``
  should be the file's last 1 KiB (a little trailing padding after the end is allowed).
  """
  if fmt == "png" and PNG_END not in tail:
    return "truncated PNG file (no IEND chunk at the end)"
  if fmt == "jpeg" and JPEG_END not in tail:
    return "truncated JPEG file (no end-of-image marker at the end)"
  return None


def image_hw(path: str) -> tuple:
  """``(height, width)`` of an image file from its header where possible (PNG/JPEG via
  PIL, which does not decode pixels); DICOM is decoded. DataError naming ``path``."""
  return image_hw_bytes(read_bytes(path), path)


def image_hw_bytes(data: bytes, path: str = "<bytes>") -> tuple:
  """:func:`image_hw` of encoded image bytes; ``path`` names them in errors."""
  fmt = sniff_format(data[:132])
  if fmt in ("png", "jpeg"):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
          width, height = im.size
      return int(height), int(width)
    except Exception as e:  # PIL raises assorted types for damaged headers
      raise DataError(f"{path}: cannot read {fmt.upper()} header ({e})") from e
  return tuple(decode_bytes_numpy(data, path).shape[:2])


def sniff_format(head: bytes) -> Optional[str]:
  """Format of encoded bytes from their first 132 bytes: "png", "jpeg", "dicom" or None."""
  if head[:8] == PNG_MAGIC:
    return "png"
  if head[:3] == JPEG_MAGIC:
    return "jpeg"
  if len(head) >= 132 and head[128:132] == DICOM_MAGIC:
    return "dicom"
  if _is_raw_dicom(head):
    return "dicom"
  return None


# A DICOM file written without its 128-byte preamble and "DICM" (pydicom reads it with
# force=True) starts with a file-meta (0002) or identifying (0008) group element: group,
# element, then an explicit VR (two capitals) or an implicit 4-byte length (< 64 KiB here).
_RAW_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00")


def _is_raw_dicom(head: bytes) -> bool:
  if len(head) < 8 or head[:2] not in _RAW_DICOM_GROUPS:
    return False
  vr = head[4:6]
  return (vr.isalpha() and vr.isupper()) or head[6:8] == b"\x00\x00"


def _is_raw_dicom_graph(data: tf.Tensor) -> tf.Tensor:
  """:func:`_is_raw_dicom` in graph mode."""
  def check():
    group = tf.strings.substr(data, 0, 2)
    vr = tf.io.decode_raw(tf.strings.substr(data, 4, 2), tf.uint8)
    explicit = tf.reduce_all((vr >= 65) & (vr <= 90))
    implicit = tf.equal(tf.strings.substr(data, 6, 2), b"\x00\x00")
    known = tf.logical_or(tf.equal(group, _RAW_DICOM_GROUPS[0]),
                          tf.equal(group, _RAW_DICOM_GROUPS[1]))
    return tf.logical_and(known, tf.logical_or(explicit, implicit))
  return tf.cond(tf.strings.length(data) >= 8, check, lambda: tf.constant(False))


def _format_index(data: tf.Tensor) -> tf.Tensor:
  """0 PNG, 1 JPEG, 2 DICOM, 3 unknown (graph mode)."""
  is_png = tf.equal(tf.strings.substr(data, 0, 8), PNG_MAGIC)
  is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), JPEG_MAGIC)
  # substr fails when pos > length, so only look at byte 128 of long enough inputs.
  is_dicom = tf.cond(tf.strings.length(data) >= 132,
                     lambda: tf.equal(tf.strings.substr(data, 128, 4), DICOM_MAGIC),
                     lambda: tf.constant(False))
  is_dicom = tf.logical_or(is_dicom, _is_raw_dicom_graph(data))
  return tf.where(is_png, 0, tf.where(is_jpeg, 1, tf.where(is_dicom, 2, 3)))


def _target_size(height: tf.Tensor, width: tf.Tensor, max_size: int) -> tf.Tensor:
  longest = tf.maximum(height, width)
  scale = tf.minimum(tf.constant(1.0, tf.float64),
                     tf.constant(float(max_size), tf.float64) / tf.cast(longest, tf.float64))
  h = tf.maximum(1, tf.cast(tf.round(tf.cast(height, tf.float64) * scale), tf.int32))
  w = tf.maximum(1, tf.cast(tf.round(tf.cast(width, tf.float64) * scale), tf.int32))
  return tf.stack([h, w])


def _shrink(image: tf.Tensor, max_size: Optional[int], scale: float,
            original_hw: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Native-channel image (any dtype) → float32 in [0, 1], longest side <= max_size.

  ``original_hw`` (the size before a DCT reduction) fixes the output size so it does not
  depend on the reduction's rounding.
  """
  if max_size is None:
    return tf.cast(image, tf.float32) / scale
  shape = tf.shape(image)
  hw = shape[:2] if original_hw is None else original_hw
  size = _target_size(hw[0], hw[1], max_size)
  needs = tf.reduce_any(tf.not_equal(size, shape[:2]))
  return tf.cond(
      needs,
      lambda: tf.image.resize(image, size, method="area") / scale,
      lambda: tf.cast(image, tf.float32) / scale)


def shrink_to(image: tf.Tensor, max_size: Optional[int]) -> tf.Tensor:
  """A decoded float ``[H, W, C]`` image in [0, 1] downscaled as the decoders do (area
  resampling, aspect kept, never upscaled) so its longest side is at most ``max_size``
  (None: unchanged). The JPEG decoder's DCT-domain reduction of a huge JPEG happens on the
  file's bytes, before this, and is not reproduced."""
  return _shrink(tf.cast(image, tf.float32), max_size, 1.0)


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
  """[H, W, C] with C in 1..4 → [H, W, 3]: grey replicated, alpha dropped."""
  channels = tf.shape(image)[-1]
  image = tf.cond(channels < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]),
                  lambda: image[..., :3])
  image.set_shape([None, None, 3])
  return image


def _decode_png(data: tf.Tensor, max_size: Optional[int]) -> tf.Tensor:
  image = tf.io.decode_png(data, channels=0, dtype=tf.uint16)
  return _shrink(image, max_size, 65535.0)


def _decode_jpeg(data: tf.Tensor, max_size: Optional[int]) -> tf.Tensor:
  if max_size is None:
    return _shrink(tf.io.decode_jpeg(data, channels=0), None, 255.0)
  shape = tf.image.extract_jpeg_shape(data)
  longest = tf.maximum(shape[0], shape[1])
  # Largest DCT reduction that still leaves at least max_size pixels on the long side.
  ratio_index = tf.reduce_sum(tf.cast(
      tf.stack([longest >= 2 * max_size, longest >= 4 * max_size,
                longest >= 8 * max_size]), tf.int32))
  branches = [lambda r=r: tf.io.decode_jpeg(data, channels=0, ratio=r) for r in (1, 2, 4, 8)]
  image = tf.switch_case(ratio_index, branches)
  return _shrink(image, max_size, 255.0, original_hw=shape[:2])


def _decode_dicom(data: tf.Tensor, max_size: Optional[int],
                  options: dicom_lib.DicomOptions) -> tf.Tensor:
  def fn(raw):
    if isinstance(raw, np.ndarray):  # a 0-d object array when run eagerly
      raw = raw.item()
    return dicom_lib.decode_dicom_bytes(raw, options)
  image = tf.numpy_function(fn, [data], tf.float32, stateful=False)
  image.set_shape([None, None, None])
  return _shrink(image, max_size, 1.0)


def decode_image_bytes(data: tf.Tensor, max_size: Optional[int] = None,
                       dicom_options: Optional[dicom_lib.DicomOptions] = None,
                       name: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Encoded PNG/JPEG/DICOM bytes → float32 ``[H, W, 3]`` in ``[0, 1]`` (graph mode).

  Args:
    data: scalar string tensor with the file's bytes.
    max_size: if set, downscale so the longest side is <= max_size (aspect kept).
    dicom_options: DICOM grey mapping; default ``DicomOptions()``: the file's VOI LUT or
      window, else the image's min–max (see :mod:`remedis_tf.data.dicom`).
    name: optional scalar string (the path) included in the unknown-format error.

  Raises (when run): InvalidArgumentError for unrecognised or undecodable bytes.
  """
  options = dicom_options or dicom_lib.DicomOptions()
  data = tf.convert_to_tensor(data, tf.string)
  label = name if name is not None else tf.constant("<bytes>")

  def unknown():
    check = tf.debugging.Assert(
        False, ["not a PNG, JPEG or DICOM file (unrecognised magic bytes):", label])
    with tf.control_dependencies([check]):
      return tf.zeros([1, 1, 3], tf.float32)

  image = tf.switch_case(_format_index(data), [
      lambda: _decode_png(data, max_size),
      lambda: _decode_jpeg(data, max_size),
      lambda: _decode_dicom(data, max_size, options),
      unknown,
  ])
  image.set_shape([None, None, None])
  return _to_rgb(image)


def load_image(path: tf.Tensor, max_size: Optional[int] = None,
               dicom_options: Optional[dicom_lib.DicomOptions] = None) -> tf.Tensor:
  """Reads and decodes the image at ``path`` (string scalar) → float32 [H, W, 3] in [0, 1]."""
  path = tf.convert_to_tensor(path, tf.string)
  return decode_image_bytes(tf.io.read_file(path), max_size=max_size,
                            dicom_options=dicom_options, name=path)


def read_bytes(path: str) -> bytes:
  """Whole file via gfile; DataError naming the file if missing, unreadable or empty."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
  except tf.errors.NotFoundError as e:
    raise DataError(f"{path}: image file not found") from e
  except tf.errors.OpError as e:
    raise DataError(f"{path}: cannot read image file ({e.message.splitlines()[0]})") from e
  if not data:
    raise DataError(f"{path}: empty image file (0 bytes)")
  return data


def tf_error_text(e: tf.errors.OpError) -> str:
  """The informative line of a TF op error, without node names and graph tracebacks."""
  text = re.sub(r"\{\{[^}]*\}\}", "", e.message or "")
  for line in text.splitlines():
    line = re.sub(r"\s*\[Op:[^\]]*\].*$", "", line).strip()
    if line and not line.startswith(("Graph execution error", "Detected at node", "File ")):
      return line
  return type(e).__name__


def decode_bytes_numpy(data: bytes, where: str = "<bytes>", max_size: Optional[int] = None,
                       dicom_options: Optional[dicom_lib.DicomOptions] = None) -> np.ndarray:
  """Eager version of :func:`decode_image_bytes` raising DataError (prefixed ``where``)."""
  fmt = sniff_format(data[:132])
  if fmt is None:
    raise DataError(f"{where}: not a PNG, JPEG or DICOM file (unrecognised magic bytes "
                    f"{data[:8]!r})")
  if fmt == "dicom":
    try:
      image = dicom_lib.decode_dicom_bytes(data, dicom_options or dicom_lib.DicomOptions())
    except DataError as e:
      raise DataError(f"{where}: {e}") from e
    if max_size is None:
      return np.repeat(image, 3 // image.shape[-1], axis=-1).astype(np.float32)
    image_t = _shrink(tf.constant(image), max_size, 1.0)
    return _to_rgb(image_t).numpy()
  try:
    return decode_image_bytes(tf.constant(data), max_size=max_size,
                              dicom_options=dicom_options).numpy()
  except tf.errors.OpError as e:
    msg = tf_error_text(e)
    raise DataError(f"{where}: cannot decode {fmt.upper()} data ({msg})") from e


def read_image_numpy(path: str, max_size: Optional[int] = None,
                     dicom_options: Optional[dicom_lib.DicomOptions] = None) -> np.ndarray:
  """Reads + decodes one file eagerly → np.float32 ``[H, W, 3]`` in ``[0, 1]``.

  Same numerics as the graph path; every failure is a DataError naming ``path``.
  """
  return decode_bytes_numpy(read_bytes(path), path, max_size, dicom_options)
