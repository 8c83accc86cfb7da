"""Image-folder manifests: class folders (multiclass) and unlabelled trees."""

import numpy as np
import pytest

import image_files as F
from remedis_tf.data import folders
from remedis_tf.errors import DataError

PNG = F.png_bytes(np.zeros((4, 4), np.uint8))


def _tree(root, rels):
  for rel in rels:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(PNG)


def test_class_folders_one_hot_sorted(tmp_path):
  _tree(tmp_path, ["nevus/b.png", "nevus/sub/a.JPG", "melanoma/patient7_x.jpeg",
                   "melanoma/notes.txt", "melanoma/.hidden.png", "bcc/p3/c.dcm",
                   ".cache/z.png"])
  m = folders.class_folder_manifest(str(tmp_path), patient_regex=r"p(?:atient)?(\d+)")
  assert m.task == "multiclass" and m.label_names == ("bcc", "melanoma", "nevus")
  assert [r.example_id for r in m.records] == ["bcc/p3/c.dcm", "melanoma/patient7_x.jpeg",
                                               "nevus/b.png", "nevus/sub/a.JPG"]
  np.testing.assert_array_equal(m.label_matrix(), [[1, 0, 0], [0, 1, 0], [0, 0, 1],
                                                   [0, 0, 1]])
  np.testing.assert_array_equal(m.mask_matrix(), np.ones((4, 3)))
  assert [r.patient_id for r in m.records][:2] == ["3", "7"]
  assert m.records[2].image_path == f"{tmp_path}/nevus/b.png"


def test_class_folder_errors(tmp_path):
  with pytest.raises(DataError, match="image folder not found"):
    folders.class_folder_manifest(str(tmp_path / "nope"))
  _tree(tmp_path, ["a/x.png", "loose.png"])
  (tmp_path / "b").mkdir()
  with pytest.raises(DataError, match="loose.png: image directly under"):
    folders.class_folder_manifest(str(tmp_path))
  (tmp_path / "loose.png").unlink()
  with pytest.raises(DataError, match="/b: class folder contains no images"):
    folders.class_folder_manifest(str(tmp_path))
  (tmp_path / "b").rmdir()
  with pytest.raises(DataError, match="at least 2 class folders"):
    folders.class_folder_manifest(str(tmp_path))


def test_unlabelled_tree(tmp_path):
  _tree(tmp_path, ["site1/patient00001/s1/v1.png", "site1/patient00002/s1/v1.png",
                   "top.jpg", "skip.bmp"])
  m = folders.folder_manifest(str(tmp_path), labelled=False, patient_regex=r"patient\d+")
  assert m.task == "unlabelled" and m.num_labels == 0
  assert [r.example_id for r in m.records] == ["site1/patient00001/s1/v1.png",
                                               "site1/patient00002/s1/v1.png", "top.jpg"]
  assert [r.patient_id for r in m.records] == ["patient00001", "patient00002", ""]
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataError, match="no images found"):
    folders.unlabelled_folder_manifest(str(empty))
