"""validate_manifest: every bad-file kind is caught, in fail and skip modes."""

import numpy as np
import pytest
import tensorflow as tf

import image_files as F
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.data.validate import check_file, validate_manifest
from remedis_tf.errors import DataError, StorageError

RNG = np.random.RandomState(1)


def _jpeg_corrupt():
  data = bytearray(F.jpeg_bytes(RNG.randint(0, 255, (64, 64, 3)).astype(np.uint8)))
  sos = data.find(b"\xff\xda")  # start of scan: keep the headers, wreck the entropy data
  return bytes(data[:sos + 12]) + b"\xff\xd9"


def _files(tmp_path):
  good_png = F.png_bytes(RNG.randint(0, 255, (16, 16)).astype(np.uint8))
  big_png = F.png_bytes(RNG.randint(0, 255, (64, 64)).astype(np.uint8))
  kinds = {
      "good.png": good_png,
      "good.jpg": F.jpeg_bytes(RNG.randint(0, 255, (16, 16, 3)).astype(np.uint8)),
      "good.dcm": F.dicom_bytes(RNG.randint(0, 4096, (8, 8)).astype(np.uint16), bits_stored=12),
      "nopixels.dcm": F.dicom_bytes(np.zeros((8, 8), np.uint16), with_pixels=False),
      "empty.png": b"",
      "text.png": b"Patient notes: nothing to see here\n" * 5,
      "truncated.png": big_png[:len(big_png) // 2],
      "corrupt.jpg": _jpeg_corrupt(),
  }
  paths = {name: F.write(tmp_path / name, data) for name, data in kinds.items()}
  paths["missing.png"] = str(tmp_path / "missing.png")
  return paths


def _manifest(paths):
  records = tuple(Record(image_path=p, example_id=n, source_row=i + 2)
                  for i, (n, p) in enumerate(paths.items()))
  return Manifest(records=records, source="files.csv")


BAD_DECODE = {"nopixels.dcm", "empty.png", "text.png", "truncated.png", "corrupt.jpg",
              "missing.png"}
# The header check also reads the last 1 KiB, so truncation is caught without decoding.
BAD_HEADER = {"empty.png", "text.png", "missing.png", "truncated.png"}


def test_each_kind_checked(tmp_path):
  paths = _files(tmp_path)
  for name, path in paths.items():
    reason = check_file(path, "decode")
    assert (reason is not None) == (name in BAD_DECODE), (name, reason)
    header_reason = check_file(path, "header")
    assert (header_reason is not None) == (name in BAD_HEADER), (name, header_reason)
  assert "no pixel data" in check_file(paths["nopixels.dcm"], "decode")
  assert "0 bytes" in check_file(paths["empty.png"], "header")
  assert "truncated PNG" in check_file(paths["truncated.png"], "header")


@pytest.mark.parametrize("check,bad", [("decode", BAD_DECODE), ("header", BAD_HEADER)])
def test_skip_mode_returns_good_subset_and_report(tmp_path, check, bad):
  paths = _files(tmp_path)
  manifest = _manifest(paths)
  good, report = validate_manifest(manifest, check=check, num_threads=3, skip_bad=True,
                                   max_examples=2)
  assert [r.example_id for r in good.records] == [n for n in paths if n not in bad]
  assert report.count == len(bad) and report.total == len(paths)
  assert len(report.examples) == 2
  first_bad = [n for n in paths if n in bad][:2]
  assert [e.path for e in report.examples] == [paths[n] for n in first_bad]
  text = report.summary()
  assert f"skipped {len(bad)} of {len(paths)}" in text and paths[first_bad[0]] in text


def test_fail_mode_names_first_bad_file_and_row(tmp_path):
  paths = _files(tmp_path)
  manifest = _manifest(paths)
  with pytest.raises(DataError) as e:
    validate_manifest(manifest, check="decode", num_threads=4)
  msg = str(e.value)
  assert msg.startswith(paths["nopixels.dcm"]) and "row 5 of files.csv" in msg
  assert "\n" not in msg
  ok = manifest.subset([0, 1, 2])
  same, report = validate_manifest(ok, check="decode")
  assert same is ok and report.count == 0 and report.summary() == ""


def test_all_bad_raises_even_when_skipping(tmp_path):
  paths = _files(tmp_path)
  manifest = _manifest({n: paths[n] for n in ("empty.png", "text.png")})
  with pytest.raises(DataError, match="all 2 images are unreadable"):
    validate_manifest(manifest, check="header", skip_bad=True)


def test_unusable_remote_storage_is_one_storage_error_not_a_bad_file(monkeypatch):
  """Unreachable gs:// is not a per-file problem (skipping would drop every file)."""
  path = "gs://b/img/0.png"
  errors = {
      "dns": tf.errors.FailedPreconditionError(
          None, None, "Error executing an HTTP request: libcurl code 6 meaning 'Could not "
          "resolve hostname', error details: Could not resolve host: www.googleapis.com"),
      "gone": tf.errors.NotFoundError(None, None, "HTTP response code 404 with body 'No such "
                                      f"object' when reading {path}"),
  }

  def exists(which):
    def raise_it(p):
      raise errors[which]
    return raise_it

  monkeypatch.setattr(tf.io.gfile, "exists", exists("dns"))
  with pytest.raises(StorageError, match=f"cannot reach Cloud Storage for image {path} "
                                         r"\(Could not resolve host: www.googleapis.com\)"):
    check_file(path, "header")
  monkeypatch.setattr(tf.io.gfile, "exists", exists("gone"))
  assert check_file(path, "header").startswith("cannot read file (")
