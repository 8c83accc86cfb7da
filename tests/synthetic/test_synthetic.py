"""Tests for the embedded synthetic multi-site benchmark (quick config only)."""

import csv
import dataclasses
import filecmp
import json
import os
import re

import numpy as np
from PIL import Image
import pytest

from remedis_tf import synthetic
from remedis_tf.errors import ConfigError
from remedis_tf.synthetic import FINDINGS, SyntheticConfig, chest, writer

# Tolerances here (docs/testing.md):
# statistical, float64 numpy only: label prevalences from 40000 draws have standard error
# sqrt(p(1-p)/n) <= 0.0025, so atol 0.01 is 4 standard errors (fixed seed: deterministic).

MEDICAL_SPLITS = ("site_a/unlabelled", "site_a/train", "site_a/valid", "site_a/test",
                  "site_b/train", "site_b/test", "site_c/train", "site_c/test")
PATH_RE = re.compile(r"^site_([abc])/(unlabelled|train|valid|test)/(patient\d{5})/study1/"
                     r"view(\d)_(frontal|lateral)\.png$")


def _read_csv(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def _load(root, rel):
  """PNG → float array in [0, 1] (8- or 16-bit)."""
  arr = np.asarray(Image.open(os.path.join(root, rel)))
  return arr.astype(np.float64) / (65535.0 if arr.dtype == np.uint16 else 255.0)


def _all_files(root):
  out = []
  for d, _, files in os.walk(root):
    out += [os.path.relpath(os.path.join(d, f), root) for f in files]
  return sorted(out)


def _tiny(seed):
  """Smaller than quick(): for tests that generate several copies."""
  return SyntheticConfig.quick(
      seed=seed, site_a_unlabelled_patients=3, site_a_train_patients=3,
      site_a_valid_patients=2, site_a_test_patients=2, site_b_train_patients=2,
      site_b_test_patients=2, site_c_train_patients=2, site_c_test_patients=2,
      natural_classes=3, natural_train_per_class=1, natural_test_per_class=1)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synthetic") / "bench")
  return synthetic.generate_benchmark(root, SyntheticConfig.quick(seed=0))


def test_layout_and_exact_columns(bench):
  root = bench["out_dir"]
  assert set(bench["csv"]) == set(MEDICAL_SPLITS) | {"natural/train", "natural/test"}
  for key in MEDICAL_SPLITS:
    path = bench["csv"][key]
    assert path == os.path.join(root, key + ".csv") and os.path.exists(path)
    header, rows = _read_csv(path)
    if key.endswith("unlabelled"):
      assert header == ["Path", "Patient", "Site", "Frontal/Lateral", "Sex", "Age"]
    else:
      assert header == ["Path", "Patient", "Site", "Frontal/Lateral", "Opacity", "Nodule",
                        "Cardiomegaly", "Effusion", "Sex", "Age"]
    site, split = key.split("/")
    for row in rows:
      m = PATH_RE.match(row[0])
      assert m, row[0]
      assert (m.group(1), m.group(2)) == (site[-1], split)
      assert row[1] == m.group(3)
      assert row[2] == site[-1].upper()
      assert row[3] == m.group(5).capitalize()
      assert os.path.exists(os.path.join(root, row[0]))
      allowed = {"1.0", "0.0", "-1.0", ""} if split == "train" else {"1.0", "0.0"}
      assert set(row[4:-2]) <= allowed, (key, row)
      assert row[-2] in ("F", "M") and 18 <= int(row[-1]) <= 95
  for key in ("natural/train", "natural/test"):
    header, rows = _read_csv(bench["csv"][key])
    assert header == ["Path", "Label"]
    for path, label in rows:
      assert path.startswith(f"{key}/{label}/") and os.path.exists(os.path.join(root, path))
  stored = json.load(open(bench["benchmark_json"]))
  assert stored == bench["summary"]
  assert stored["findings"] == list(FINDINGS)


def test_train_splits_have_uncertain_and_blank_labels(bench):
  values = []
  for key in ("site_a/train", "site_b/train", "site_c/train"):
    _, rows = _read_csv(bench["csv"][key])
    values += [v for r in rows for v in r[4:-2]]
  assert "-1.0" in values and "" in values and "1.0" in values and "0.0" in values


def test_patients_disjoint_multi_image_and_consistent_labels(bench):
  owner = {}
  for key in MEDICAL_SPLITS:
    _, rows = _read_csv(bench["csv"][key])
    per_patient = {}
    for row in rows:
      per_patient.setdefault(row[1], []).append(row)
    for patient, prow in per_patient.items():
      assert owner.setdefault(patient, key) == key, f"{patient} in {owner[patient]} and {key}"
      assert len(prow) >= 1
      assert len({tuple(r[4:]) for r in prow}) == 1  # one study: same findings per image
      assert [r[3] for r in prow][0] == "Frontal"
    counts = [len(v) for v in per_patient.values()]
    assert max(counts) >= 2
    lo, hi = SyntheticConfig.quick().images_per_patient
    assert lo <= min(counts) and max(counts) <= hi
    assert bench["summary"]["splits"][key]["patients"] == len(per_patient)
    assert bench["summary"]["splits"][key]["images"] == len(rows)


def test_quick_is_small_and_natural_has_20_plus_classes(bench):
  total = sum(s["images"] for s in bench["summary"]["splits"].values())
  assert 200 <= total <= 800
  for key in ("natural/train", "natural/test"):
    _, rows = _read_csv(bench["csv"][key])
    labels = {r[1] for r in rows}
    assert len(labels) >= 20
    img = np.asarray(Image.open(os.path.join(bench["out_dir"], rows[0][0])))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
  assert len(set(bench["summary"]["natural_classes"])) == 24


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
  first = synthetic.generate_benchmark(str(tmp_path / "first"), _tiny(seed=0))
  again = synthetic.generate_benchmark(str(tmp_path / "again"), _tiny(seed=0))
  files = _all_files(first["out_dir"])
  assert files == _all_files(again["out_dir"])
  _, mismatch, errors = filecmp.cmpfiles(first["out_dir"], again["out_dir"], files,
                                         shallow=False)
  assert not mismatch and not errors
  for f in files:
    if f.endswith(".png"):
      np.testing.assert_array_equal(_load(first["out_dir"], f), _load(again["out_dir"], f))

  other = synthetic.generate_benchmark(str(tmp_path / "other"), _tiny(seed=1))
  for key in MEDICAL_SPLITS:
    with open(first["csv"][key]) as f1, open(other["csv"][key]) as f2:
      assert f1.read() != f2.read(), key
  _, rows0 = _read_csv(first["csv"]["site_a/test"])
  _, rows1 = _read_csv(other["csv"]["site_a/test"])
  a, b = _load(first["out_dir"], rows0[0][0]), _load(other["out_dir"], rows1[0][0])
  assert a.shape == b.shape and not np.array_equal(a, b)


def _site_images(bench, key, frontal_only=True):
  _, rows = _read_csv(bench["csv"][key])
  rows = [r for r in rows if r[3] == "Frontal" or not frontal_only]
  return np.stack([_load(bench["out_dir"], r[0]) for r in rows]), rows


def test_site_shifts_go_in_documented_directions(bench):
  a, _ = _site_images(bench, "site_a/train")
  b, _ = _site_images(bench, "site_b/train")
  c, _ = _site_images(bench, "site_c/train")
  # B: brighter, washed-out tone curve (gamma < 1, positive offset) and more noise.
  assert b.mean() > a.mean() + 0.05
  noise = lambda x: np.median(np.abs(np.diff(x, axis=2)))  # noqa: E731
  assert noise(b) > 1.5 * noise(a)
  # C: stored inverted, so the air around the body is bright instead of dark.
  corner = lambda x: np.mean([x[:, r, c].mean() for r in (slice(0, 4), slice(-4, None))  # noqa: E731
                              for c in (slice(0, 4), slice(-4, None))])
  assert corner(a) < 0.15 and corner(c) > 0.75
  # Field of view, seen below the lungs where body and air are easy to tell apart:
  # C is wider (body covers fewer pixels), B tighter (more) than A.
  body_a = (a[:, 48:] > 0.1).mean()
  body_b = (b[:, 48:] > 0.35).mean()
  body_c = (c[:, 48:] < 0.9).mean()
  assert body_c < body_a - 0.1 and body_b > body_a + 0.05
  # C is stored as 16-bit PNG, A and B as 8-bit.
  _, rows = _read_csv(bench["csv"]["site_c/test"])
  assert np.asarray(Image.open(os.path.join(bench["out_dir"], rows[0][0]))).dtype == np.uint16
  summary = bench["summary"]["sites"]
  assert summary["C"]["invert"] and summary["B"]["gamma"] < 1.0 < summary["C"]["gamma"]


def _pair(labels, seed, subtle=False):
  base = synthetic.render_case("a", (0, 0, 0, 0), seed=seed, subtle=subtle)
  with_finding = synthetic.render_case("a", labels, seed=seed, subtle=subtle)
  return with_finding - base


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_finding_changes_pixels_where_expected(seed):
  size = 64
  rows, cols = np.mgrid[0:size, 0:size] / size
  centroid = lambda w: ((w * rows).sum() / w.sum(), (w * cols).sum() / w.sum())  # noqa: E731
  # Nodule: a small bright focal spot.
  d = _pair((0, 1, 0, 0), seed)
  assert d.max() > 0.1
  assert 0 < (d > 0.05).sum() <= 60
  # Opacity: a diffuse brightening, much wider than a nodule, weaker at its peak.
  d_opa = _pair((1, 0, 0, 0), seed)
  assert (d_opa > 0.03).sum() > 3 * (d > 0.05).sum()
  assert d_opa.min() > -0.02
  # Cardiomegaly: brighter silhouette in the lower middle of the chest.
  d = _pair((0, 0, 1, 0), seed)
  w = np.clip(d, 0, None)
  assert w.sum() > 5.0 and d.min() > -0.02
  r, c = centroid(w)
  assert 0.5 < r < 0.85 and 0.3 < c < 0.8
  # Effusion: a bright band at a lung base (below the lung centres, above the bottom).
  d = _pair((0, 0, 0, 1), seed)
  w = np.clip(d, 0, None)
  assert w.sum() > 5.0
  r, _ = centroid(w)
  assert r > 0.55
  # Subtle findings change less than clear ones.
  assert np.abs(_pair((0, 0, 0, 1), seed, subtle=True)).sum() < np.abs(d).sum()


def test_cardiomegaly_widens_central_silhouette_on_disk(bench):
  imgs, rows = [], []
  for key in ("site_a/train", "site_a/valid", "site_a/test"):
    x, r = _site_images(bench, key)
    imgs.append(x)
    rows += r
  imgs = np.concatenate(imgs)
  card = np.array([r[6] == "1.0" for r in rows])
  no_card = np.array([r[6] == "0.0" for r in rows])
  assert card.sum() >= 3 and no_card.sum() >= 10
  band = imgs[:, 38:48, 16:48].mean(axis=(1, 2))  # lower mid-chest, spanning both lungs
  assert band[card].mean() > band[no_card].mean() + 0.02


def test_label_sampler_matches_prevalence_and_cooccurrence():
  rng = np.random.default_rng(0)
  prev = (0.25, 0.12, 0.2, 0.18)
  labels = chest._sample_labels(rng, 40000, prev, eff_rr=2.5, opa_rr=1.8)
  np.testing.assert_allclose(labels.mean(0), prev, atol=0.01)
  card, eff = labels[:, 2], labels[:, 3]
  ratio = eff[card].mean() / eff[~card].mean()
  assert 2.1 < ratio < 2.9
  cfg = SyntheticConfig(uncertain_rate=0.05, blank_rate=0.08)
  obs = writer._observed_labels(labels, rng, cfg)
  assert abs((obs == -1).mean() - 0.05) < 0.005
  assert not np.isnan(obs[labels]).any()  # only negatives are "not mentioned"
  assert abs(np.isnan(obs[~labels]).mean() - 0.08 * 0.95) < 0.006
  known = (obs == 0) | (obs == 1)
  assert np.array_equal(obs[known], labels[known].astype(float))


def test_generated_prevalences_follow_site_configuration(bench):
  splits = bench["summary"]["splits"]
  b = np.mean([splits[k]["prevalence_true"]["Effusion"] for k in ("site_b/train",
                                                                  "site_b/test")])
  c = np.mean([splits[k]["prevalence_true"]["Effusion"] for k in ("site_c/train",
                                                                  "site_c/test")])
  assert b > c  # configured 0.30 vs 0.10
  for key in ("site_a/valid", "site_a/test", "site_b/test"):
    assert splits[key]["uncertain_fraction"] == 0 and splits[key]["blank_fraction"] == 0


def test_idempotent_and_regenerates_cleanly(tmp_path):
  root = str(tmp_path / "bench")
  cfg = _tiny(seed=3)
  first = synthetic.generate_benchmark(root, cfg)
  _, rows = _read_csv(first["csv"]["site_a/train"])
  png = os.path.join(root, rows[0][0])
  mtime = os.stat(png).st_mtime_ns
  with open(os.path.join(root, "notes.txt"), "w") as f:
    f.write("user file")
  assert synthetic.generate_benchmark(root, cfg) == first
  assert os.stat(png).st_mtime_ns == mtime

  stale = os.path.join(root, "site_a", "train", "stale.png")
  with open(stale, "wb") as f:
    f.write(b"x")
  second = synthetic.generate_benchmark(root, dataclasses.replace(cfg, seed=4))
  assert second["summary"]["seed"] == 4
  assert not os.path.exists(stale)
  assert os.path.exists(os.path.join(root, "notes.txt"))
  listed = set()
  for path in second["csv"].values():
    listed |= {r[0] for r in _read_csv(path)[1]}
  on_disk = {f for f in _all_files(root) if f.endswith(".png")}
  assert on_disk == listed

  # An interrupted run (no benchmark.json) is redone from scratch.
  os.remove(second["benchmark_json"])
  assert synthetic.generate_benchmark(root, dataclasses.replace(cfg, seed=4)) == second


def test_config_validation_and_round_trip():
  cfg = SyntheticConfig.quick(seed=5)
  assert SyntheticConfig.from_dict(cfg.to_json_dict()) == cfg
  with pytest.raises(ConfigError, match="image_size"):
    SyntheticConfig(image_size=8)
  with pytest.raises(ConfigError, match="images_per_patient"):
    SyntheticConfig(images_per_patient=(3, 2))
  with pytest.raises(ConfigError, match="natural_classes"):
    SyntheticConfig(natural_classes=99)
  with pytest.raises(ConfigError, match="site_b.prevalence"):
    SyntheticConfig(site_b=synthetic.SiteShift(prevalence=(0.1, 0.2)))
  with pytest.raises(ConfigError, match="site_a_train_patients"):
    SyntheticConfig(site_a_train_patients=0)


def test_example_grid(tmp_path):
  out = synthetic.render_example_grid(str(tmp_path / "grid.png"), tile=48)
  img = Image.open(out)
  assert img.mode == "RGB"
  assert img.size[0] > 6 * 48 and img.size[1] > 4 * 48
  assert os.path.getsize(out) < 200_000


def test_patient_texture_adds_a_body_confined_pattern_of_the_configured_rms():
  base = synthetic.render_case("a", [False] * 4, seed=3, image_size=64)
  textured = synthetic.render_case("a", [False] * 4, seed=3, image_size=64,
                                   config=synthetic.SyntheticConfig(patient_texture=0.05))
  diff = textured.astype(np.float64) - base
  corners = np.concatenate([diff[:4, :4].ravel(), diff[:4, -4:].ravel()])
  assert np.abs(corners).max() < 0.01  # air outside the body: no texture
  centre = diff[20:44, 20:44]  # inside the body
  rms = float(np.sqrt(np.mean(centre ** 2)))
  assert 0.03 < rms < 0.07, rms
  # Default: no texture draws at all, so the old benchmark is unchanged.
  again = synthetic.render_case("a", [False] * 4, seed=3, image_size=64,
                                config=synthetic.SyntheticConfig(patient_texture=0.0))
  np.testing.assert_array_equal(again, base)
  with pytest.raises(ConfigError, match="patient_texture"):
    synthetic.SyntheticConfig(patient_texture=0.5)
  with pytest.raises(ConfigError, match="later_view_jitter"):
    synthetic.SyntheticConfig(later_view_jitter=-1.0)
