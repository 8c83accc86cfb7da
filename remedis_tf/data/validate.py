"""Up-front checks of every image a manifest points at, with file names and CSV rows.

Graph-mode decode errors inside ``tf.data`` cannot say which CSV row is bad and stop a
run hours in; :func:`validate_manifest` finds such files before training starts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import warnings
from typing import List, Optional, Tuple

from PIL import Image
import tensorflow as tf

from remedis_tf import remote_io
from remedis_tf.data import decode
from remedis_tf.data import dicom as dicom_lib
from remedis_tf.data.manifest import Manifest
from remedis_tf.errors import ConfigError, DataError

CHECKS = ("header", "decode")


@dataclasses.dataclass(frozen=True)
class BadFile:
  """One unusable image: its path, CSV row (0 if n/a) and the reason."""
  path: str
  source_row: int
  reason: str


@dataclasses.dataclass(frozen=True)
class BadReport:
  """What :func:`validate_manifest` skipped.

  Attributes:
    total: records checked.
    count: records found bad (and dropped when skipping).
    examples: the first few bad files, in manifest order.
    source: the manifest's source (for messages).
  """
  total: int
  count: int
  examples: Tuple[BadFile, ...] = ()
  source: str = ""

  def summary(self) -> str:
    """Human-readable multi-line summary for the end of a run ("" when nothing was bad)."""
    if not self.count:
      return ""
    lines = [f"skipped {self.count} of {self.total} images from {self.source or 'manifest'} "
             f"as unreadable; first {len(self.examples)}:"]
    for bad in self.examples:
      row = f" (row {bad.source_row})" if bad.source_row else ""
      lines.append(f"  {bad.path}{row}: {bad.reason}")
    return "\n".join(lines)


_TAIL_BYTES = 1024
# The decode check only proves a file decodes; it never needs the full resolution, and
# decoding e.g. a 12000x12000 scan at full size would take gigabytes.
_CHECK_MAX_SIZE = 256


def _head(path: str, n: int) -> bytes:
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read(n)


def _tail(path: str, size: int, n: int = _TAIL_BYTES) -> bytes:
  with tf.io.gfile.GFile(path, "rb") as f:
    f.seek(max(0, size - n))
    return f.read(n)


# PIL decodes at full size; above this many pixels only the TF decoder (with downscaling)
# checks the file, keeping the check's memory bounded.
_PIL_MAX_PIXELS = 50_000_000


def _pil_check(data: bytes) -> None:
  """Full decode with PIL (an independent decoder); raises on damage PIL detects."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as im:
        if im.width * im.height > _PIL_MAX_PIXELS:
          return  # huge but maybe fine: only the (downscaling) TF decode below checks it
        im.load()
  except Image.DecompressionBombError:
    pass  # too big for PIL's safety limit, not broken; the TF decode below still runs


def check_file(path: str, check: str = "decode",
               dicom_options: Optional[dicom_lib.DicomOptions] = None) -> Optional[str]:
  """Returns None if ``path`` is usable, else a one-line reason.

  "header": exists, non-empty, PNG/JPEG/DICOM magic bytes, and a PNG/JPEG whose last
  1 KiB holds its end marker (so a truncated download is caught without decoding).
  "decode": additionally a full decode with PIL (PNG/JPEG, up to 50 Mpixel) or pydicom
  (DICOM) and with the training pipeline's own decoder (downscaled to 256 px, so huge
  images are checked in bounded memory), so a file that passes cannot stop a
  ``tf.data`` pipeline.

  Raises StorageError when remote storage as a whole cannot be used (unreachable host,
  credentials, permission): skipping files would not help then.
  """
  try:
    if not tf.io.gfile.exists(path):
      return "file not found"
    if check == "header":
      size = tf.io.gfile.stat(path).length
      if size == 0:
        return "empty file (0 bytes)"
      head = _head(path, 132)
      fmt = decode.sniff_format(head)
      if fmt is None:
        return f"not a PNG, JPEG or DICOM file (starts with {head[:8]!r})"
      return decode.truncation_reason(fmt, _tail(path, size))
    data = decode.read_bytes(path)
    fmt = decode.sniff_format(data[:132])
    if fmt is None:
      return f"not a PNG, JPEG or DICOM file (starts with {data[:8]!r})"
    truncated = decode.truncation_reason(fmt, data[-_TAIL_BYTES:])
    if truncated:
      return truncated
    if fmt != "dicom":
      try:
        _pil_check(data)
      except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"cannot decode {fmt.upper()} data ({detail})"
    decode.decode_bytes_numpy(data, path, max_size=_CHECK_MAX_SIZE,
                              dicom_options=dicom_options)
    return None
  except DataError as e:
    msg = str(e)
    return msg[len(path) + 2:] if msg.startswith(path + ": ") else msg
  except tf.errors.OpError as e:
    storage = remote_io.storage_error(e, path, "image")
    if storage is not None and remote_io.classify(e) != "not_found":
      raise storage from None  # the storage is unusable, not this one file
    return f"cannot read file ({decode.tf_error_text(e)})"


def validate_manifest(manifest: Manifest, check: str = "header", num_threads: int = 8,
                      skip_bad: bool = False, max_examples: int = 10,
                      dicom_options: Optional[dicom_lib.DicomOptions] = None,
                      ) -> Tuple[Manifest, BadReport]:
  """Checks every record's file in a thread pool.

  Args:
    manifest: records to check.
    check: "header" (cheap: exists, non-empty, known magic) or "decode" (full decode).
    num_threads: parallel checks (I/O bound; decoding releases the GIL).
    skip_bad: False → raise on the first bad file in manifest order; True → drop bad
      records and report them.
    max_examples: how many bad files the report lists.
    dicom_options: DICOM settings used for the decode check (default: ``manifest.dicom``).

  Returns:
    (the good records as a Manifest with the same schema, a BadReport).

  Raises:
    DataError: (skip_bad=False) naming the first bad file, its CSV row and the reason;
      (skip_bad=True) when no good record is left.
  """
  if check not in CHECKS:
    raise ConfigError(f"check must be one of {CHECKS}, got {check!r}")
  records = manifest.records
  dicom_options = dicom_options or manifest.dicom
  bad: List[int] = []
  reasons = {}
  pool = concurrent.futures.ThreadPoolExecutor(max(1, int(num_threads)))
  try:
    results = pool.map(lambda r: check_file(r.image_path, check, dicom_options), records)
    for i, reason in enumerate(results):
      if reason is None:
        continue
      if not skip_bad:
        rec = records[i]
        row = f"row {rec.source_row} of {manifest.source}" if rec.source_row else \
            f"record {i} of {manifest.source or 'manifest'}"
        raise DataError(f"{rec.image_path} ({row}): {reason} (skip such files with "
                        "skip_bad / --skip_bad_examples)")
      bad.append(i)
      reasons[i] = reason
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
  examples = tuple(BadFile(records[i].image_path, records[i].source_row, reasons[i])
                   for i in bad[:max_examples])
  report = BadReport(total=len(records), count=len(bad), examples=examples,
                     source=manifest.source)
  if not bad:
    return manifest, report
  bad_set = set(bad)
  good = [i for i in range(len(records)) if i not in bad_set]
  if not good:
    raise DataError(f"{manifest.source or 'manifest'}: all {len(records)} images are "
                    f"unreadable, e.g. {examples[0].path}: {examples[0].reason}")
  return manifest.subset(good, source_suffix=f" (minus {len(bad)} bad)"), report
