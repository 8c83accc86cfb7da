"""ECE and reliability bins vs an independent loop; temperature scaling fits and files."""

import numpy as np
import pytest

from remedis_tf.errors import CheckpointError, DataError
from remedis_tf.eval import calibration

# Tolerances here (docs/testing.md):
# derived. float64 numpy. ECE against a loop reference: same sums in another order,
# ~1e-15, approx defaults. Temperature recovery (rtol/rel 0.08): statistical, n = 20000 draws;
# the MLE's relative standard error at these logit scales is ~1-2%, so 0.08 is >= 4 sigma and
# the fixed seed makes it deterministic; not a rounding tolerance. rel=2e-3 against a
# 20001-point log grid over [0.05, 20]: the grid spacing is ln(400)/20000 = 3e-4 relative, so
# the grid argmin is within 1.5e-4 of the true minimum; 2e-3 is >10x that. Round trips
# (rtol=1e-6): values pass through JSON with repr precision, exact up to 1e-16.


def _loop_ece(y, p, num_bins):
  """Independent statement: explicit bin edges, last bin closed, empty bins skipped."""
  edges = np.linspace(0, 1, num_bins + 1)
  total = 0.0
  for b in range(num_bins):
    hi_ok = p <= edges[b + 1] if b == num_bins - 1 else p < edges[b + 1]
    sel = (p >= edges[b]) & hi_ok
    if sel.any():
      total += sel.sum() / y.size * abs(y[sel].mean() - p[sel].mean())
  return total


@pytest.mark.parametrize("case", ["random", "edges", "empty_bins", "all_one", "all_zero"])
def test_ece_matches_independent_loop(case):
  rng = np.random.default_rng(1)
  n = 300
  p = rng.random(n)
  y = (rng.random(n) < p ** 2).astype(float)
  if case == "edges":
    p = rng.integers(0, 11, n) / 10.0  # exactly on bin edges, incl. 0 and 1
  elif case == "empty_bins":
    p = 0.3 * rng.random(n)
  elif case == "all_one":
    y = np.ones(n)
  elif case == "all_zero":
    y = np.zeros(n)
  for bins in (1, 5, 10, 15):
    assert calibration.expected_calibration_error(y, p, bins) == pytest.approx(
        _loop_ece(y, p, bins), abs=1e-12)
  if case == "all_one":
    assert calibration.expected_calibration_error(y, p, 1) == pytest.approx(1 - p.mean())


def test_ece_weights_and_undefined():
  rng = np.random.default_rng(2)
  y = rng.integers(0, 2, 50).astype(float)
  p = rng.random(50)
  counts = rng.integers(0, 3, (4, 50))
  batched = calibration.expected_calibration_error(y, p, 10, counts)
  for r in range(4):
    idx = np.repeat(np.arange(50), counts[r])
    assert batched[r] == pytest.approx(_loop_ece(y[idx], p[idx], 10))
  assert np.isnan(calibration.expected_calibration_error(y, p, 10, np.zeros(50)))
  assert np.isnan(calibration.expected_calibration_error([], [], 10))
  with pytest.raises(DataError, match="in \\[0, 1\\]"):
    calibration.expected_calibration_error([1, 0], [0.5, 1.2])


def test_reliability_bins():
  y = np.array([1, 0, 1, 1, 0], float)
  p = np.array([0.05, 0.15, 0.95, 1.0, 0.5])
  bins = calibration.reliability_bins(y, p, 4)
  assert bins["count"] == [2, 0, 1, 2]
  assert bins["mean_probability"][0] == pytest.approx(0.1)
  assert bins["mean_probability"][1] is None and bins["fraction_positive"][1] is None
  assert bins["fraction_positive"] == [0.5, None, 0.0, 1.0]
  assert bins["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_fit_recovers_known_temperatures():
  rng = np.random.default_rng(3)
  n = 20000
  z = rng.normal(0, 3, (n, 2))
  true_t = np.array([2.0, 0.5])
  y = (rng.random((n, 2)) < 1 / (1 + np.exp(-z / true_t))).astype(float)
  fit = calibration.fit_temperature("multilabel", z, y, label_names=["a", "b"])
  assert fit["scope"] == "per finding"
  np.testing.assert_allclose([fit["temperature"]["a"], fit["temperature"]["b"]], true_t,
                             rtol=0.08)
  assert fit["nll_after"]["a"] < fit["nll_before"]["a"]
  # Multi-class: one shared temperature.
  zc = rng.normal(0, 2, (n, 4))
  pc = calibration.probabilities("multiclass", zc, 1.7)
  ids = (rng.random(n)[:, None] > np.cumsum(pc, 1)).sum(1)
  fit_c = calibration.fit_temperature("multiclass", zc, np.eye(4)[ids])
  assert fit_c["scope"] == "per model"
  assert set(fit_c["temperature"].values()) == {fit_c["temperature"]["class_0"]}
  assert fit_c["temperature"]["class_0"] == pytest.approx(1.7, rel=0.08)


def test_fit_is_the_nll_minimum_and_respects_masks():
  rng = np.random.default_rng(4)
  z = rng.normal(0, 2, (200, 1))
  y = (rng.random((200, 1)) < 0.5 + 0.3 * np.tanh(z)).astype(float)
  mask = np.ones_like(y)
  mask[:50] = 0
  z_masked = z.copy()
  z_masked[:50] = 1e6  # masked rows must not matter
  t = calibration.fit_temperature("binary", z_masked, y, mask)["temperature"]["class_0"]
  grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20001))
  zz, yy = z[50:, 0], y[50:, 0]
  nll = [np.mean(np.logaddexp(0, zz / g) - yy * zz / g) for g in grid]
  assert t == pytest.approx(grid[int(np.argmin(nll))], rel=2e-3)


def test_fit_degenerate_cases():
  z = np.array([[1.0, -2.0], [2.0, 3.0], [0.5, 1.0]])
  y = np.array([[1, 0], [1, 1], [1, 0]], float)  # first finding: all positive
  fit = calibration.fit_temperature("multilabel", z, y, label_names=["all_pos", "ok"])
  assert fit["temperature"]["all_pos"] == 1.0
  assert any("all_pos" in n for n in fit["notes"])
  assert "all one class" in fit["fallback"]["all_pos"]


def test_untrustworthy_fits_fall_back_to_one_with_the_reason():
  rng = np.random.default_rng(7)
  # The reported case: 8 validation images, two findings; the fits end on the bounds (0.05
  # for separable scores, 20 for scores against the labels, where every probability
  # becomes ~0.5). Even without the size rule neither is used.
  z8 = rng.normal(0, 2, (8, 2))
  y8 = np.stack([(z8[:, 0] > 0), (z8[:, 1] < 0)], 1).astype(float)
  unguarded = calibration.fit_temperature("multilabel", z8, y8, label_names=["A", "B"],
                                          min_examples=0, min_per_class=0)
  assert unguarded["temperature"] == {"A": 1.0, "B": 1.0}
  assert "lower bound T = 0.05" in unguarded["fallback"]["A"]
  assert "upper bound T = 20" in unguarded["fallback"]["B"]
  fit = calibration.fit_temperature("multilabel", z8, y8, label_names=["A", "B"])
  assert fit["temperature"] == {"A": 1.0, "B": 1.0}
  assert set(fit["fallback"]) == {"A", "B"} and "too few" in fit["fallback"]["A"]
  # One warning line for findings that share a reason, one per finding otherwise.
  assert calibration.fallback_warnings(fit) == [
      "temperature of A, B not fitted: 8 labelled validation example(s) (4 positive, 4 "
      "negative), fewer than 20 examples or 5 of each class: too few to fit a temperature; "
      "using T = 1"]
  assert [w.split(":")[0] for w in calibration.fallback_warnings(unguarded)] == [
      "temperature of A not fitted", "temperature of B not fitted"]
  # Enough examples, but separable scores: the NLL falls all the way to T = 0.05.
  z = rng.normal(0, 2, (60, 1))
  sep = calibration.fit_temperature("binary", z, (z > 0).astype(float))
  assert sep["temperature"]["class_0"] == 1.0
  assert "lower bound" in sep["fallback"]["class_0"]
  # Multi-class: too few rows for the shared temperature.
  small = calibration.fit_temperature("multiclass", rng.normal(0, 1, (10, 3)),
                                      np.eye(3)[rng.integers(0, 3, 10)])
  assert set(small["temperature"].values()) == {1.0} and len(small["fallback"]) == 3
  assert calibration.fallback_warnings(small) == [
      "temperature of class_0, class_1, class_2 not fitted: 10 labelled validation "
      "example(s), fewer than 20: too few to fit a temperature; using T = 1"]
  # A trustworthy fit records no fallback, and the record keeps what the fit says.
  z = rng.normal(0, 3, (400, 1))
  y = (rng.random((400, 1)) < 1 / (1 + np.exp(-z / 2))).astype(float)
  good = calibration.fit_temperature("binary", z, y)
  assert good["fallback"] == {} and calibration.fallback_warnings(good) == []
  record = calibration.temperature_record("multilabel", ["A", "B"], fit, "val.csv")
  assert record["fallback"] == fit["fallback"]


def test_temperature_files_round_trip(tmp_path):
  fit = calibration.fit_temperature("multilabel", np.array([[1.0, 2.0], [-1.0, 0.5]]),
                                    np.array([[1, 0], [0, 1]], float), label_names=["a", "b"])
  record = calibration.temperature_record("multilabel", ["a", "b"], fit, "val.csv")
  assert calibration.read_temperature(str(tmp_path)) is None
  calibration.write_temperature(str(tmp_path), record)
  back = calibration.read_temperature(str(tmp_path))
  assert back == record
  np.testing.assert_allclose(calibration.temperature_vector(back, ["b", "a"]),
                             [fit["temperature"]["b"], fit["temperature"]["a"]], rtol=1e-6)
  with pytest.raises(CheckpointError, match="'c'"):
    calibration.temperature_vector(back, ["a", "c"])
  (tmp_path / calibration.TEMPERATURE_FILE).write_text("{}")
  with pytest.raises(CheckpointError, match="not a"):
    calibration.read_temperature(str(tmp_path))


def test_calibration_report_before_and_after():
  rng = np.random.default_rng(5)
  n = 4000
  z = rng.normal(0, 1, (n, 1))
  y = (rng.random((n, 1)) < 1 / (1 + np.exp(-3 * z))).astype(float)  # under-confident model
  patients = np.repeat(np.arange(n // 2), 2)
  fit = calibration.fit_temperature("binary", z, y)
  temps = calibration.temperature_vector(fit, ["class_0"])
  rep = calibration.calibration_report("binary", y, z, None, ["class_0"], temps, patients,
                                       num_bins=10, num_bootstrap=100)
  entry = rep["targets"]["class_0"]
  p_before = 1 / (1 + np.exp(-z[:, 0]))
  assert entry["ece_before"]["value"] == pytest.approx(_loop_ece(y[:, 0], p_before, 10))
  assert entry["ece_after"]["value"] < 0.5 * entry["ece_before"]["value"]
  assert entry["ece_before"]["lower"] <= entry["ece_before"]["value"] <= entry["ece_before"][
      "upper"]
  assert sum(entry["bins_after"]["count"]) == n
  only_before = calibration.calibration_report("binary", y, z, None, ["class_0"],
                                               num_bootstrap=0)
  assert only_before["targets"]["class_0"]["ece_after"] is None
  mc = calibration.calibration_report("multiclass", np.array([0, 1, 1]),
                                      np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), None,
                                      ["x", "y"], np.array([2.0, 2.0]), num_bootstrap=0)
  assert list(mc["targets"]) == ["top-label"] and mc["targets"]["top-label"]["num_examples"] == 3
