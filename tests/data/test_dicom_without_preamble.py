"""A DICOM file written without its 128-byte preamble and "DICM" marker (pydicom reads it
with force=True) is recognised and decoded like the full file (issue 19, item 10)."""

import numpy as np
import tensorflow as tf

from remedis_tf.data import decode, validate
import image_files as F  # tests/data is on sys.path (rootdir-relative test module imports)


def test_dicom_without_preamble_decodes_like_the_full_file(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 4096, (16, 12)).astype(np.uint16)
  full = F.dicom_bytes(pixels)
  raw = full[132:]  # no preamble, no "DICM"
  assert raw[:2] == b"\x02\x00" and decode.sniff_format(raw[:132]) == "dicom"
  expected = decode.decode_bytes_numpy(full)
  np.testing.assert_array_equal(decode.decode_bytes_numpy(raw), expected)
  graph = tf.function(lambda d: decode.decode_image_bytes(d))(tf.constant(raw))
  np.testing.assert_array_equal(graph.numpy(), expected)
  path = tmp_path / "raw.dcm"
  path.write_bytes(raw)
  assert validate.check_file(str(path), "decode") is None
  # Text is still refused as no image at all.
  assert decode.sniff_format(b"Patient notes: not an image\n" * 8) is None
