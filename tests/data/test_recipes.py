"""CheXpert, CheXpert-style synthetic, MIMIC-CXR-JPG and generic CSV recipes."""

import gzip

import numpy as np
import pytest

from remedis_tf.data import recipes
from remedis_tf.errors import ConfigError, DataError

OBS = recipes.CHEXPERT_OBSERVATIONS
HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(OBS)


def _chexpert_row(path, view, values):
  cells = [values.get(o, "") for o in OBS]
  return f"{path},Female,68,{view},{'AP' if view == 'Frontal' else ''}," + ",".join(cells)


@pytest.fixture
def chexpert_csv(tmp_path):
  root = tmp_path / "CheXpert-v1.0-small"
  root.mkdir()
  rows = [
      _chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
                    "Frontal", {"Atelectasis": "1.0", "Edema": "-1.0", "No Finding": ""}),
      _chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg",
                    "Lateral", {"Atelectasis": "1.0", "Pleural Effusion": "0.0"}),
      _chexpert_row("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg",
                    "Frontal", {"Cardiomegaly": "-1.0", "Consolidation": "1.0"}),
  ]
  path = root / "train.csv"
  path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
  return tmp_path, str(path)


def test_chexpert_default_columns_and_paths(chexpert_csv):
  tmp_path, csv_path = chexpert_csv
  expected_first = str(tmp_path / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
  for root in (str(tmp_path), str(tmp_path / "CheXpert-v1.0-small"),
               str(tmp_path / "CheXpert-v1.0-small") + "/", None):
    m = recipes.chexpert(csv_path, root)
    assert m.records[0].image_path == expected_first, root
  assert m.label_names == recipes.CHEXPERT_COMPETITION and m.task == "multilabel"
  # Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion; -1 ignored (mask 0).
  np.testing.assert_array_equal(m.label_matrix(), [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0],
                                                   [0, 0, 1, 0, 0]])
  np.testing.assert_array_equal(m.mask_matrix(), [[1, 1, 1, 0, 1], [1, 1, 1, 1, 1],
                                                  [1, 0, 1, 1, 1]])
  assert [r.patient_id for r in m.records] == ["patient00001", "patient00001", "patient00002"]
  assert [r.view for r in m.records] == ["frontal", "lateral", "frontal"]
  assert [r.source_row for r in m.records] == [2, 3, 4]


def test_chexpert_policies_and_frontal_only(chexpert_csv):
  _, csv_path = chexpert_csv
  m = recipes.chexpert(csv_path, None, uncertain_policy="ones", frontal_only=True)
  assert len(m) == 2 and all(r.view == "frontal" for r in m.records)
  np.testing.assert_array_equal(m.label_matrix(), [[1, 0, 0, 1, 0], [0, 1, 1, 0, 0]])
  one = recipes.chexpert(csv_path, None, label_columns=["Edema"], uncertain_policy="zeros")
  assert one.task == "binary"
  np.testing.assert_array_equal(one.label_matrix(), [[0], [0], [0]])
  np.testing.assert_array_equal(one.mask_matrix(), [[1], [1], [1]])
  with pytest.raises(DataError, match="missing column 'Fracturez'"):
    recipes.chexpert(csv_path, None, label_columns=["Fracturez"])


def test_chexpert_style_synthetic_csv(tmp_path):
  text = ("Path,Patient,Site,Frontal/Lateral,Finding A,Finding B\n"
          "site_a/train/patient00012/study1/view1_frontal.png,P12,site_a,Frontal,1,-1\n"
          "site_a/train/patient00012/study1/view2_lateral.png,P12,site_a,Lateral,,0\n"
          "site_a/train/patient00013/study1/view1_frontal.png,P13,site_a,Frontal,0,1\n")
  (tmp_path / "train.csv").write_text(text)
  m = recipes.chexpert(str(tmp_path / "train.csv"), str(tmp_path),
                       label_columns=["Finding A", "Finding B"])
  assert m.records[0].image_path == str(
      tmp_path / "site_a/train/patient00012/study1/view1_frontal.png")
  assert [r.patient_id for r in m.records] == ["P12", "P12", "P13"]
  assert {r.site for r in m.records} == {"site_a"}
  np.testing.assert_array_equal(m.label_matrix(), [[1, 0], [0, 0], [0, 1]])
  np.testing.assert_array_equal(m.mask_matrix(), [[1, 0], [1, 1], [1, 1]])
  unl = recipes.chexpert(str(tmp_path / "train.csv"), str(tmp_path), label_columns=())
  assert unl.task == "unlabelled" and unl.num_labels == 0 and len(unl) == 3


def _mimic(tmp_path, gz_split=True):
  labels = ("subject_id,study_id," + ",".join(OBS) + "\n"
            + "10000032,50414267," + ",".join({"Atelectasis": "1.0", "Edema": "-1.0"}.get(o, "")
                                             for o in OBS) + "\n"
            + "10000032,53189527," + ",".join({"Cardiomegaly": "0.0"}.get(o, "")
                                             for o in OBS) + "\n"
            + "11000011,56699142," + ",".join({"Pleural Effusion": "1.0"}.get(o, "")
                                             for o in OBS) + "\n")
  split = ("dicom_id,study_id,subject_id,split\n"
           "02aa804e-bde0afdd,50414267,10000032,train\n"
           "174413ec-4ec4c1f7,50414267,10000032,train\n"
           "2a2277a9-b0ded155,53189527,10000032,train\n"
           "68b5c4b1-227d0485,56699142,11000011,validate\n"
           "9f1b0e6a-00000000,59999999,12000012,train\n")  # no CheXpert row → dropped
  meta = ("dicom_id,subject_id,study_id,ViewPosition,Rows,Columns\n"
          "02aa804e-bde0afdd,10000032,50414267,PA,3056,2544\n"
          "174413ec-4ec4c1f7,10000032,50414267,LATERAL,3056,2544\n"
          "2a2277a9-b0ded155,10000032,53189527,AP,3056,2544\n"
          "68b5c4b1-227d0485,11000011,56699142,PA,3056,2544\n"
          "9f1b0e6a-00000000,12000012,59999999,,3056,2544\n")
  (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(labels)
  if gz_split:
    (tmp_path / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(gzip.compress(split.encode()))
  else:
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(split)
  (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(meta)
  return str(tmp_path)


def test_mimic_join(tmp_path):
  root = _mimic(tmp_path)
  m = recipes.mimic_cxr(root, split="train")
  assert [r.example_id for r in m.records] == ["02aa804e-bde0afdd", "174413ec-4ec4c1f7",
                                               "2a2277a9-b0ded155"]
  assert m.records[0].image_path == (
      f"{root}/files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg")
  assert [r.patient_id for r in m.records] == ["10000032"] * 3
  assert [r.view for r in m.records] == ["frontal", "lateral", "frontal"]
  np.testing.assert_array_equal(m.label_matrix(), [[1, 0, 0, 0, 0]] * 2 + [[0] * 5])
  np.testing.assert_array_equal(m.mask_matrix(), [[1, 1, 1, 0, 1]] * 2 + [[1] * 5])
  assert recipes.mimic_cxr(root, split="train", frontal_only=True).paths() == [
      m.paths()[0], m.paths()[2]]
  val = recipes.mimic_cxr(root, split="valid")
  assert len(val) == 1 and val.label_matrix()[0].tolist() == [0, 0, 0, 0, 1]
  unl = recipes.mimic_cxr(root, split="all", label_columns=())
  assert len(unl) == 5 and unl.task == "unlabelled"


def test_mimic_errors(tmp_path):
  with pytest.raises(DataError, match="mimic-cxr-2.0.0-split.csv"):
    recipes.mimic_cxr(str(tmp_path))
  root = _mimic(tmp_path, gz_split=False)
  with pytest.raises(ConfigError, match="split"):
    recipes.mimic_cxr(root, split="dev")
  with open(f"{root}/mimic-cxr-2.0.0-chexpert.csv", "a") as f:
    f.write("10000032,50414267" + ",1" * len(OBS) + "\n")
  with pytest.raises(DataError, match=r"chexpert\.csv:5: column 'study_id': duplicated study"):
    recipes.mimic_cxr(root)


def test_generic_csv_task_inference(tmp_path):
  p = tmp_path / "g.csv"
  p.write_text("file,y,z,case\na.png,1,0,c1\nb.png,0,1,c2\n")
  binary = recipes.generic_csv(str(p), "/d", path_column="file", label_columns=["y"],
                               patient_column="case")
  assert binary.task == "binary" and binary.records[1].patient_id == "c2"
  assert recipes.generic_csv(str(p), "/d", path_column="file",
                             label_columns=["y", "z"]).task == "multilabel"
  assert recipes.generic_csv(str(p), "/d", path_column="file").task == "unlabelled"
  mc = recipes.generic_csv(str(p), "/d", path_column="file", class_column="case")
  assert mc.task == "multiclass" and mc.label_names == ("c1", "c2")


def test_attribute_columns_in_recipes(chexpert_csv, tmp_path):
  _, csv_path = chexpert_csv
  m = recipes.chexpert(csv_path, None, attribute_columns=["Sex", "AP/PA", "Age"])
  assert [r.attribute("AP/PA") for r in m.records] == ["AP", "", "AP"]
  assert {r.attribute("Sex") for r in m.records} == {"Female"}
  assert m.records[0].attributes == (("Sex", "Female"), ("AP/PA", "AP"), ("Age", "68"))
  (tmp_path / "mimic").mkdir()
  root = _mimic(tmp_path / "mimic")
  mm = recipes.mimic_cxr(root, split="train", attribute_columns=["ViewPosition", "split"])
  assert [r.attribute("ViewPosition") for r in mm.records] == ["PA", "LATERAL", "AP"]
  assert {r.attribute("split") for r in mm.records} == {"train"}
  with pytest.raises(DataError, match="missing column 'Sex'"):
    recipes.mimic_cxr(root, attribute_columns=["Sex"])
  p = tmp_path / "g.csv"
  p.write_text("file,y,grp\na.png,1,x\nb.png,0,y\n")
  g = recipes.generic_csv(str(p), "/d", path_column="file", label_columns=["y"],
                          attribute_columns=["grp"])
  assert [r.attribute("grp") for r in g.records] == ["x", "y"]
