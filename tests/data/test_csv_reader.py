"""CSV manifest reader: label policies, metadata columns, paths, and one-line errors."""

import gzip

import numpy as np
import pytest

from remedis_tf.data import csv_reader
from remedis_tf.errors import ConfigError, DataError

CELLS = ["1", "0", "-1", "", "1.0", "0.0", "-1.0"]


def _write(tmp_path, text, name="m.csv"):
  p = tmp_path / name
  p.write_text(text)
  return str(p)


def _expected(cell, uncertain, blank):
  """Independent statement of the documented policy table."""
  if cell in ("1", "1.0"):
    return 1.0, 1.0
  if cell in ("0", "0.0"):
    return 0.0, 1.0
  if cell in ("-1", "-1.0"):
    return {"ignore": (0.0, 0.0), "ones": (1.0, 1.0), "zeros": (0.0, 1.0)}[uncertain]
  return (0.0, 1.0) if blank == "zeros" else (0.0, 0.0)


@pytest.mark.parametrize("uncertain", ["ignore", "ones", "zeros"])
@pytest.mark.parametrize("blank", ["zeros", "ignore"])
def test_label_policies(tmp_path, uncertain, blank):
  rng = np.random.RandomState(0)
  grid = [[CELLS[rng.randint(len(CELLS))] for _ in range(3)] for _ in range(12)]
  lines = ["Path,A,B,C"] + [f"img{i}.png,{','.join(r)}" for i, r in enumerate(grid)]
  path = _write(tmp_path, "\n".join(lines) + "\n")
  m = csv_reader.read_csv_manifest(path, data_root="/root", path_column="Path",
                                   label_columns=["A", "C"], task="multilabel",
                                   uncertain_policy=uncertain, blank_policy=blank)
  assert m.label_names == ("A", "C") and m.task == "multilabel" and len(m) == 12
  want = np.array([[_expected(r[j], uncertain, blank) for j in (0, 2)] for r in grid])
  np.testing.assert_array_equal(m.label_matrix(), want[..., 0])
  np.testing.assert_array_equal(m.mask_matrix(), want[..., 1])
  assert [r.source_row for r in m.records] == list(range(2, 14))
  assert m.records[3].image_path == "/root/img3.png"


def test_metadata_quoting_line_numbers_and_paths(tmp_path):
  text = ('id,Path,Patient,View,Site,Y\n'
          'a,"dir, with comma/x.png",p1,frontal,s1,1\n'
          '\n'
          'b,/abs/y.png,p2,lateral,s2,0\n'
          'c,gs://bucket/z.png,p1,,s1,\n')
  path = _write(tmp_path, text)
  m = csv_reader.read_csv_manifest(path, data_root=None, path_column="Path",
                                   label_columns=["Y"], task="binary",
                                   patient_column="Patient", view_column="View",
                                   site_column="Site", id_column="id")
  r = m.records
  assert [x.example_id for x in r] == ["a", "b", "c"]
  assert r[0].image_path == str(tmp_path / "dir, with comma/x.png")
  assert r[1].image_path == "/abs/y.png" and r[2].image_path == "gs://bucket/z.png"
  assert [x.source_row for x in r] == [2, 4, 5]
  assert [x.patient_id for x in r] == ["p1", "p2", "p1"]
  assert [x.view for x in r] == ["frontal", "lateral", ""]
  assert m.by_patient() == {"p1": [0, 2], "p2": [1]}


def test_gzip_bom_and_unlabelled(tmp_path):
  p = tmp_path / "m.csv.gz"
  p.write_bytes(gzip.compress("\ufeffPath,Other\nx.png,1\ny.png,2\n".encode("utf-8")))
  m = csv_reader.read_csv_manifest(str(p), data_root="r", path_column="Path",
                                   label_columns=[], task="unlabelled")
  assert m.task == "unlabelled" and m.label_matrix().shape == (2, 0)
  assert m.paths() == ["r/x.png", "r/y.png"]


def test_multiclass_by_name(tmp_path):
  path = _write(tmp_path, "Path,Dx\na.png,nevus\nb.png,melanoma\nc.png,nevus\n")
  m = csv_reader.read_csv_manifest(path, data_root="", path_column="Path", label_columns=[],
                                   task="multiclass", class_column="Dx")
  assert m.label_names == ("melanoma", "nevus")
  np.testing.assert_array_equal(m.label_matrix(), [[0, 1], [1, 0], [0, 1]])
  np.testing.assert_array_equal(m.mask_matrix(), np.ones((3, 2)))
  with pytest.raises(DataError, match=r"m\.csv:3: column 'Dx': unknown class name 'melanoma'"):
    csv_reader.read_csv_manifest(path, data_root="", path_column="Path", label_columns=[],
                                 task="multiclass", class_column="Dx", class_names=["nevus", "bcc"])


def test_multiclass_one_hot_columns(tmp_path):
  path = _write(tmp_path, "Path,A,B\na.png,0,1\nb.png,1,1\n")
  with pytest.raises(DataError, match=r"m\.csv:3: .*exactly one 1"):
    csv_reader.read_csv_manifest(path, data_root="", path_column="Path",
                                 label_columns=["A", "B"], task="multiclass")


@pytest.mark.parametrize("text,pattern", [
    ("Path,A\nx.png,1\n", r"m\.csv:1: missing column 'B' \(columns found: 'Path', 'A'\)"),
    ("Path,A,B\nx.png,1,0\ny.png,2,0\n", r"m\.csv:3: column 'A': unknown label value '2'"),
    ("Path,A,B\nx.png,1,yes\n", r"m\.csv:2: column 'B': unknown label value 'yes'"),
    ("Path,A,B\nx.png,1,0\ny.png,nan,0\n", r"m\.csv:3: column 'A': NaN label"),
    ("Path,A,B\nx.png,1,0\nx.png,0,0\n", r"m\.csv:3: column 'Path': duplicated id 'x.png' "
     r"\(first on line 2\)"),
    ("", r"m\.csv: empty CSV file"),
    ("\n\n", r"m\.csv: empty CSV file"),
    ("Path,A,B\n", r"m\.csv: CSV has a header but no data rows"),
    ("Path,A,B\nx.png,1\n", r"m\.csv:2: row has 2 fields but the header has 3"),
    ("Path,A,A\nx.png,1,1\n", r"m\.csv:1: duplicated column 'A'"),
    ("Path,A,B\n,1,0\n", r"m\.csv:2: column 'Path': empty image path"),
])
def test_errors_are_one_line_and_located(tmp_path, text, pattern):
  path = _write(tmp_path, text)
  with pytest.raises(DataError, match=pattern) as e:
    csv_reader.read_csv_manifest(path, data_root="", path_column="Path",
                                 label_columns=["A", "B"], task="multilabel")
  assert "\n" not in str(e.value)


def test_missing_file_and_bad_config(tmp_path):
  with pytest.raises(DataError, match="CSV file not found"):
    csv_reader.read_csv_manifest(str(tmp_path / "nope.csv"), data_root="", path_column="P",
                                 label_columns=["A"], task="binary")
  path = _write(tmp_path, "Path,A\nx.png,1\n")
  with pytest.raises(ConfigError, match="uncertain_policy"):
    csv_reader.read_csv_manifest(path, data_root="", path_column="Path", label_columns=["A"],
                                 task="binary", uncertain_policy="maybe")
  with pytest.raises(ConfigError, match="exactly one label column"):
    csv_reader.read_csv_manifest(path, data_root="", path_column="Path",
                                 label_columns=["A", "Path"], task="binary")


def test_non_utf8_and_malformed(tmp_path):
  p = tmp_path / "m.csv"
  p.write_bytes(b"Path,A\n\xff\xfe.png,1\n")
  with pytest.raises(DataError, match="not UTF-8"):
    csv_reader.read_csv_manifest(str(p), data_root="", path_column="Path",
                                 label_columns=["A"], task="binary")
  path = _write(tmp_path, 'Path,A\n"x.png,1\n')
  with pytest.raises(DataError, match=r"m\.csv:\d+: "):
    csv_reader.read_csv_manifest(path, data_root="", path_column="Path",
                                 label_columns=["A"], task="binary")


def test_attribute_columns_kept_in_records(tmp_path):
  path = _write(tmp_path, "Path,Y,Sex,Age\na.png,1, Female ,63\nb.png,0,Male,\n")
  m = csv_reader.read_csv_manifest(path, data_root="/d", path_column="Path", label_columns=["Y"],
                 task="binary", attribute_columns=["Sex", "Age", "Sex"])
  assert [r.attributes for r in m.records] == [(("Sex", "Female"), ("Age", "63")),
                                               (("Sex", "Male"), ("Age", ""))]
  assert m.records[0].attribute("Age") == "63" and m.records[0].attribute("Race") is None
  # Without the option records carry no attributes (nothing else changes).
  plain = csv_reader.read_csv_manifest(path, data_root="/d", path_column="Path", label_columns=["Y"],
                     task="binary")
  assert all(r.attributes == () for r in plain.records)
  with pytest.raises(DataError, match=r"m\.csv:1: missing column 'Race'"):
    csv_reader.read_csv_manifest(path, data_root="/d", path_column="Path", label_columns=["Y"], task="binary",
               attribute_columns=["Race"])
