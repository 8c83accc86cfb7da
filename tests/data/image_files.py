"""Writers of small test images (PNG 8/16-bit, JPEG, CMYK JPEG, DICOM) for data tests."""

import io

import numpy as np
from PIL import Image
import tensorflow as tf


def png_bytes(array: np.ndarray) -> bytes:
  """uint8 [H,W], [H,W,3] or uint16 [H,W] → PNG bytes (16-bit grey via PIL 'I;16')."""
  buf = io.BytesIO()
  if array.dtype == np.uint16:
    Image.fromarray(array.astype(np.uint16)).save(buf, "PNG")
  else:
    Image.fromarray(array).save(buf, "PNG")
  return buf.getvalue()


def png16_rgb_bytes(array: np.ndarray) -> bytes:
  """uint16 [H,W,3] → 48-bit PNG (PIL cannot write it; TF can)."""
  return tf.io.encode_png(array.astype(np.uint16)).numpy()


def jpeg_bytes(array: np.ndarray, mode: str = None, quality: int = 95) -> bytes:
  buf = io.BytesIO()
  im = Image.fromarray(array)
  if mode:
    im = im.convert(mode)
  im.save(buf, "JPEG", quality=quality)
  return buf.getvalue()


def dicom_bytes(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored=None,
                signed: bool = False, slope=None, intercept=None, window=None,
                voi_function=None, voi_lut=None, modality_lut=None,
                with_pixels: bool = True) -> bytes:
  """A minimal valid DICOM (Secondary Capture, explicit VR little endian) file.

  ``window``: (center, width) or lists of them; ``voi_function``: VOILUTFunction;
  ``voi_lut`` / ``modality_lut``: (first mapped value, bits per entry, entries) written as
  a one-item VOI / Modality LUT Sequence (LUTData as US).
  """
  # pydicom is an optional, heavy dependency: imported only when a DICOM is written.
  from pydicom.dataset import Dataset, FileMetaDataset  # pylint: disable=g-import-not-at-top
  from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = SecondaryCaptureImageStorage
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.Modality = "OT"
  ds.PatientID = "p1"
  allocated = pixels.dtype.itemsize * 8
  ds.Rows, ds.Columns = pixels.shape[:2]
  ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
  if pixels.ndim == 3:
    ds.PlanarConfiguration = 0
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated = allocated
  ds.BitsStored = bits_stored or allocated
  ds.HighBit = ds.BitsStored - 1
  ds.PixelRepresentation = 1 if signed else 0
  if slope is not None:
    ds.RescaleSlope = slope
  if intercept is not None:
    ds.RescaleIntercept = intercept
  if window is not None:
    ds.WindowCenter, ds.WindowWidth = window
  if voi_function is not None:
    ds.VOILUTFunction = voi_function
  for keyword, lut in (("VOILUTSequence", voi_lut), ("ModalityLUTSequence", modality_lut)):
    if lut is not None:
      first, lut_bits, entries = lut
      item = Dataset()
      item.add_new(0x00283002, "US", [len(entries), first, lut_bits])  # LUTDescriptor
      item.add_new(0x00283006, "US", [int(v) for v in entries])  # LUTData
      if keyword == "ModalityLUTSequence":
        item.ModalityLUTType = "US"
      setattr(ds, keyword, [item])
  if with_pixels:
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
  buf = io.BytesIO()
  ds.save_as(buf, enforce_file_format=True)
  return buf.getvalue()


def write(path, data: bytes) -> str:
  with open(path, "wb") as f:
    f.write(data)
  return str(path)
