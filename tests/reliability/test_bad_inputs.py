"""Catalogue of bad inputs: each gives one ``error:`` line naming the input, exit code 2 and
no output (binaries), a DataError/ConfigError/CheckpointError naming it (library), or —
for odd but valid inputs — works.

Binaries run as subprocesses (``python -m experiments.<name>``) where the exit code and
message are the contract; library-level cases run in-process.
"""

import hashlib
import json
import os

import numpy as np
import pytest

from conftest import (FINETUNE, NUM_GOOD, UNREACHABLE_GCS,  # pylint: disable=import-error
                      run_binary)

from remedis_tf import run_lock
from remedis_tf.errors import CheckpointError, ConfigError, DataError

# Tolerances here (docs/testing.md):
# derived: 16-bit values / 65535 in float32 are within 2^-24 (6e-8) of the float64 quotient,
# so atol 1e-7 proves the 16-bit precision is kept (8-bit would be off by up to 2e-3). The
# config value read back from JSON is exact (approx default).


def _run_dir(tmp_path, name="run"):
  return str(tmp_path / name)


def _finetune(csv, run_dir, *extra):
  return run_binary("finetune", *FINETUNE, f"--train_csv={csv}", f"--run_dir={run_dir}",
                    *extra)


def _expect_refusal(result, run_dir, *fragments):
  """Exit 2, one error line holding every fragment, and no run directory written."""
  line = result.error_line()
  assert result.returncode == 2, result.stderr[-2000:]
  for fragment in fragments:
    assert fragment in line, (fragment, line)
  if run_dir is not None:
    assert not os.path.exists(run_dir), os.listdir(run_dir)
  return line


# -- image files -------------------------------------------------------------------------

@pytest.mark.parametrize("name,reason", [
    ("missing.png", "file not found"),
    ("truncated.png", "truncated PNG"),
    ("notes.png", "not a PNG, JPEG or DICOM"),
    ("empty.png", "empty file (0 bytes)"),
])
def test_bad_image_file_is_named_with_its_csv_row(catalogue, tmp_path, name, reason):
  csv = catalogue.csv_with(f"bad_{name}.csv", [f"img/{name},p99,1,0"])
  run_dir = _run_dir(tmp_path)
  # The header check (the default) is enough for all of these.
  _expect_refusal(_finetune(csv, run_dir), run_dir, catalogue.files[name],
                  f"row {NUM_GOOD + 2} of {csv}", reason, "--skip_bad_examples")


@pytest.mark.parametrize("name,reason", [
    ("corrupt.jpg", "cannot decode JPEG"),
    ("nopixels.dcm", "no pixel data"),
])
def test_undecodable_file_found_by_decode_validation(catalogue, tmp_path, name, reason):
  csv = catalogue.csv_with(f"undecodable_{name}.csv", [f"img/{name},p99,1,0"])
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(csv, run_dir, "--train_validate=decode"), run_dir,
                  catalogue.files[name], f"row {NUM_GOOD + 2}", reason)


def test_corrupt_jpeg_past_header_check_fails_in_one_line(catalogue, tmp_path):
  """Headers and end marker intact, so only decoding finds it: mid-run the graph error
  becomes one line pointing at --train_validate=decode, and the fresh run dir is removed."""
  # Four spellings of the one bad file fill the first batch, so step 1 must hit it.
  spellings = ["img/corrupt.jpg", "./img/corrupt.jpg", "img/./corrupt.jpg", "./img/./corrupt.jpg"]
  csv = catalogue.csv_with("corrupt_only.csv",
                           [f"{p},p{i},{i % 2},1" for i, p in enumerate(spellings)], good=False)
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(csv, run_dir), run_dir, "failed to decode during training",
                  "JPEG", csv, "validate=decode")


def test_skip_bad_examples_counts_and_reports(catalogue, tmp_path):
  csv = catalogue.csv_with("three_bad.csv", ["img/notes.png,p97,1,0", "img/empty.png,p98,0,1",
                                             "img/missing.png,p99,1,1"])
  run_dir = _run_dir(tmp_path)
  result = _finetune(csv, run_dir, "--train_skip_bad_examples")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"skipped 3 of {NUM_GOOD + 3} images" in result.stdout
  for name in ("notes.png", "empty.png", "missing.png"):
    assert catalogue.files[name] in result.stdout
  assert "[finished] step 2" in result.stdout


@pytest.fixture(scope="module")
def odd_but_valid_run(catalogue, tmp_path_factory):
  """A run over a CMYK JPEG, a 16-bit PNG, a 12000x12000 PNG and a CSV whose patient
  column has quoted commas, validated by full decode."""
  rows = ['img/cmyk.jpg,"Doe, Jane",1,0', 'img/grey16.png,"Doe, John",0,1',
          'img/huge.png,"Roe, Richard",1,1']
  csv = catalogue.csv_with("odd_valid.csv", rows)
  run_dir = str(tmp_path_factory.mktemp("odd") / "run")
  result = _finetune(csv, run_dir, "--train_validate=decode", "--train_patient_column=Patient")
  return csv, run_dir, result


def test_cmyk_16bit_huge_and_quoted_commas_work(odd_but_valid_run):
  _, run_dir, result = odd_but_valid_run
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"{NUM_GOOD + 3} training images" in result.stdout
  assert os.path.exists(os.path.join(run_dir, "checkpoints", "checkpoint"))
  # The 12000x12000 image (144 Mpixel; 1.7 GB as float RGB) is downscaled right after
  # decoding, both by the decode check and by the training pipeline. Measured peak: about
  # 1.6-1.8 GB for the whole training process (7.6 GB before images were downscaled).
  assert result.peak_rss_mb < 2000, result.peak_rss_mb


def test_odd_images_decode_correctly(catalogue):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from remedis_tf.data import decode
  cmyk = decode.read_image_numpy(catalogue.files["cmyk.jpg"])
  assert cmyk.shape == (32, 32, 3) and cmyk.dtype == np.float32
  reference = np.asarray(Image.open(catalogue.files["cmyk.jpg"]).convert("RGB"), np.float32)
  assert np.abs(cmyk * 255.0 - reference).mean() < 3.0  # PIL vs libjpeg CMYK→RGB rounding
  grey = decode.read_image_numpy(catalogue.files["grey16.png"])
  expected = catalogue.files["_grey16"].astype(np.float64) / 65535.0
  np.testing.assert_allclose(grey[..., 0], expected, atol=1e-7)  # 16-bit precision kept
  assert np.array_equal(grey[..., 0], grey[..., 2])
  assert len(np.unique(grey)) > 256
  huge = decode.read_image_numpy(catalogue.files["huge.png"], max_size=128)
  assert huge.shape == (128, 128, 3)
  assert decode.image_hw(catalogue.files["huge.png"]) == (12000, 12000)


def test_dicom_without_pixels_in_reader(catalogue):
  from remedis_tf.data import decode
  with pytest.raises(DataError, match=r"nopixels\.dcm: .*no pixel data"):
    decode.read_image_numpy(catalogue.files["nopixels.dcm"])


# -- CSV manifests -----------------------------------------------------------------------

def test_csv_missing_column(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  _expect_refusal(run_binary("finetune", *FINETUNE, f"--train_csv={catalogue.good_csv}",
                             "--train_label_columns=A,Effusion", f"--run_dir={run_dir}"),
                  run_dir, f"{catalogue.good_csv}:1", "missing column 'Effusion'")


def test_csv_unknown_label_value(catalogue, tmp_path):
  csv = catalogue.csv_with("unknown_label.csv", ["img/notes.png,p99,yes,0"])
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(csv, run_dir), run_dir, f"{csv}:{NUM_GOOD + 2}", "column 'A'",
                  "unknown label value 'yes'")


def test_csv_row_problems_in_reader(catalogue):
  from remedis_tf.data import recipes
  dup = catalogue.csv_with("dup.csv", ["img/0.png,p99,1,0"])
  with pytest.raises(DataError, match=rf"dup\.csv:{NUM_GOOD + 2}: column 'Path': duplicated id "
                     r"'img/0.png' \(first on line 2\)"):
    recipes.generic_csv(dup, label_columns=["A", "B"])
  nan = catalogue.csv_with("nan.csv", ["img/cmyk.jpg,p99,0,NaN"])
  with pytest.raises(DataError, match=rf"nan\.csv:{NUM_GOOD + 2}: column 'B': NaN label"):
    recipes.generic_csv(nan, label_columns=["A", "B"])
  quoted = catalogue.csv_with("quoted.csv", ['img/cmyk.jpg,"Doe, Jane",1,0'])
  manifest = recipes.generic_csv(quoted, label_columns=["A", "B"], patient_column="Patient")
  assert manifest.records[-1].patient_id == "Doe, Jane"
  assert manifest.records[-1].labels == (1.0, 0.0) and len(manifest) == NUM_GOOD + 1


def test_empty_dataset(catalogue, tmp_path):
  csv = catalogue.csv_with("header_only.csv", [], good=False)
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(csv, run_dir), run_dir, csv, "no data rows")
  from remedis_tf.data import folders
  empty = tmp_path / "empty_folder"
  empty.mkdir()
  with pytest.raises(DataError, match="empty_folder"):
    folders.folder_manifest(str(empty), labelled=False)


# -- label fractions ---------------------------------------------------------------------

def test_label_fraction_zero_names_the_flag(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, "--label_fraction=0"), run_dir,
                  "--label_fraction must be in (0, 1], got 0.0")


def test_label_fraction_library_checks(catalogue):
  from remedis_tf.data import label_fraction, recipes
  manifest = recipes.generic_csv(catalogue.good_csv, label_columns=["A", "B"])
  with pytest.raises(ConfigError, match=r"label fraction must be in \(0, 1\], got 1.5"):
    label_fraction.select_fraction(manifest, fraction=1.5)
  # One positive patient for A among many: an unstratified 10 % subset can miss it.
  rows = ["img/0.png,p0,1,0"] + [f"img/{i % NUM_GOOD}.png,p{i},0,{i % 2}" for i in range(1, 20)]
  rows = [r.replace(f"img/{i % NUM_GOOD}.png,p{i}", f"./{'/.' * i}img/{i % NUM_GOOD}.png,p{i}")
          if i else r for i, r in enumerate(rows)]
  rare = recipes.generic_csv(catalogue.csv_with("rare.csv", rows, good=False),
                             label_columns=["A", "B"])
  emptied = None
  for seed in range(20):
    try:
      label_fraction.select_fraction(rare, fraction=0.1, seed=seed, stratify=False)
    except ConfigError as e:
      emptied = str(e)
      break
  assert emptied is not None and "leaves class 'A' with no positive example" in emptied
  # Stratified (what the binaries use), the same request keeps class A.
  subset = label_fraction.select_fraction(rare, fraction=0.1, seed=seed)
  assert subset.label_matrix()[:, 0].max() == 1.0


def test_label_fraction_and_examples_per_class_contradict(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, "--label_fraction=0.1",
                            "--examples_per_class=5"), run_dir,
                  "--label_fraction and --examples_per_class are alternatives")


# -- batch sizes -------------------------------------------------------------------------

def test_batch_not_divisible_by_replicas(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, "--strategy=mirrored",
                            "--num_cpu_devices=2", "--batch_size=3"), run_dir,
                  "--batch_size 3 is not divisible by the 2 replicas")


def test_batch_larger_than_dataset(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, "--batch_size=64"), run_dir,
                  f"{catalogue.good_csv} has {NUM_GOOD} images, fewer than one global batch "
                  "(--batch_size 64)")


# -- weights -----------------------------------------------------------------------------

def test_npz_with_missing_key_as_init(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  w = catalogue.weights
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, f"--init={w['missing_key.npz']}"),
                  run_dir, w["missing_key.npz"], "1 missing key(s)", w["dropped_key"],
                  "expected (")


def test_npz_of_wrong_width(catalogue):
  from remedis_tf.models.resnet_v2 import ResNetV2
  from remedis_tf.weights import bit_npz
  with pytest.raises(CheckpointError) as info:
    bit_npz.load_bit_npz(ResNetV2("tiny"), catalogue.weights["small.npz"])
  message = str(info.value)
  assert "\n" not in message
  assert ("resnet/root_block/standardized_conv2d/kernel expected (7, 7, 3, 8) found "
          "(7, 7, 3, 16)") in message
  assert "looks like small" in message


def test_savedmodel_without_variables(catalogue, tmp_path):
  from remedis_tf.weights import savedmodel
  sm = catalogue.weights["sm_no_variables"]
  with pytest.raises(CheckpointError, match=f"{sm} is not a SavedModel directory"):
    savedmodel.inspect_savedmodel(sm)  # what convert_weights --inspect runs
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, f"--init={sm}"), run_dir, sm,
                  "no variables/")


def test_checkpoint_of_another_variant_as_init(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  ckpt = catalogue.weights["small_ckpt"]
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, f"--init={ckpt}"), run_dir, ckpt,
                  "item backbone (tiny) does not match",
                  "backbone/root_conv/_kernel expected (7, 7, 3, 8) found (7, 7, 3, 16)")


# -- run directories and outputs ---------------------------------------------------------

def _digest(directory):
  out = {}
  for parent, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(parent, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def test_run_dir_of_a_different_config_is_refused(odd_but_valid_run):
  csv, run_dir, first = odd_but_valid_run
  assert first.returncode == 0, first.stderr[-2000:]
  before = _digest(run_dir)
  with open(os.path.join(run_dir, "config.json")) as f:
    assert json.load(f)["optimizer"]["base_lr"] == pytest.approx(0.003)
  result = _finetune(csv, run_dir, "--train_validate=none", "--train_patient_column=Patient",
                     "--learning_rate=0.5")
  line = _expect_refusal(result, None, f"run directory {run_dir} was written by a different "
                         "config", "optimizer.base_lr")
  assert "0.5" in line
  assert _digest(run_dir) == before  # nothing touched, no resume


def test_run_dir_in_use_is_refused_and_untouched(catalogue, tmp_path):
  """Another process holds the run directory (here: this test process, via its lock)."""
  run_dir = _run_dir(tmp_path)
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    f.write("{}\n")  # would be refused as a different config if it were read first
  with run_lock.RunLock(run_dir):
    before = _digest(run_dir)
    _expect_refusal(_finetune(catalogue.good_csv, run_dir), None,
                    f"run directory {run_dir} is in use by pid {os.getpid()} on host "
                    f"{run_lock.HOST} since ", "one process writes a run directory at a time")
    assert _digest(run_dir) == before


# -- remote storage (gs://) --------------------------------------------------------------

@pytest.mark.parametrize("binary,flag", [
    ("convert_weights", "--input"),
    ("finetune", "--train_csv"),
    ("finetune", "--init"),
    ("finetune", "--run_dir"),
    ("make_tfrecords", "--output_prefix"),
])
def test_unreachable_cloud_storage_is_one_line_before_any_work(catalogue, tmp_path, binary,
                                                               flag):
  """Each binary stats its gs:// flags first: no traceback, exit 2, nothing written."""
  remote = "gs://remedis-tests-unreachable/x/" + {"--input": "BiT-M-R50x1.npz",
                                                  "--train_csv": "train.csv",
                                                  "--init": "w.npz"}.get(flag, "out")
  run_dir = _run_dir(tmp_path)
  args = {"convert_weights": [f"--input={remote}", f"--output={tmp_path / 'out.npz'}"],
          "make_tfrecords": ["--source=csv", f"--csv={catalogue.good_csv}",
                             "--label_columns=A,B", f"--output_prefix={remote}"],
          "finetune": [*FINETUNE, f"--train_csv={catalogue.good_csv}",
                       f"--run_dir={run_dir}"]}[binary]
  args = [a for a in args if not a.startswith(f"{flag}=")] + [f"{flag}={remote}"]
  result = run_binary(binary, *args, env=UNREACHABLE_GCS)
  _expect_refusal(result, run_dir, f"cannot reach Cloud Storage for {flag} {remote}",
                  "Failed to connect to 127.0.0.1 port 9", "proxy settings")
  assert "[train]" not in result.stdout and "[data]" not in result.stdout
  assert not os.path.exists(tmp_path / "out.npz")


def test_read_only_output_directory(catalogue, tmp_path, tmpfs):
  target = tmpfs("readonly", "ro,size=64k")
  if target is None:  # no mount rights: an in-process write into a missing-permission dir
    _in_process_write_error(tmp_path, "EROFS")
    return
  run_dir = os.path.join(target, "run")
  _expect_refusal(_finetune(catalogue.good_csv, run_dir), run_dir,
                  f"cannot write {run_dir}", "Read-only file system")


def test_full_disk(catalogue, tmp_path, tmpfs):
  """A 64 KiB tmpfs (real ENOSPC) when mounting is allowed, else a simulated one."""
  target = tmpfs("full", "size=64k")
  if target is None:
    _in_process_write_error(tmp_path, "ENOSPC")
    return
  out = os.path.join(target, "exported")
  line = _expect_refusal(run_binary("convert_weights", f"--input={catalogue.weights['tiny.npz']}",
                                    f"--output={out}"), None, f"cannot write {out}",
                         "No space left on device")
  assert ".tmp-" not in line  # the user's path, not the temporary sibling


def _in_process_write_error(tmp_path, which):
  """Fallback without mount rights: the writer raises the OSError; run_main reports it."""
  import errno
  from unittest import mock
  from experiments import _cli
  code = getattr(errno, which)
  path = str(tmp_path / "out.json")
  error = OSError(code, os.strerror(code), path)
  with mock.patch("remedis_tf.io_utils.atomic_write_json", side_effect=error):
    from remedis_tf import io_utils
    with pytest.raises(OSError) as info:
      io_utils.atomic_write_json(path, {})
  assert _cli.write_error_message(info.value) == f"cannot write {path}: {os.strerror(code)}"


def test_write_error_messages():
  """run_main's classification: write failures name the path; other errors are not hidden."""
  import errno
  import tensorflow as tf
  from experiments import _cli
  assert _cli.write_error_message(OSError(errno.ENOSPC, "No space left on device",
                                          "/r/x.npz.tmp-0a1b2c3d")) == \
      "cannot write /r/x.npz: No space left on device"
  assert _cli.write_error_message(OSError(errno.ENOENT, "No such file", "/a")) is None
  assert _cli.write_error_message(ValueError("bug")) is None
  assert _cli.write_error_message(tf.errors.PermissionDeniedError(
      None, None, "/ro/run; Read-only file system")) == "cannot write /ro/run: Read-only file system"
  oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
  assert _cli.write_error_message(oom) is None
  full = tf.errors.ResourceExhaustedError(
      None, None, "{{function_node x}} /r/checkpoints/ckpt-2_temp/part-00000-of-00001.data-"
      "00000-of-00001.tempstate123; No space left on device [Op:SaveV2]")
  assert _cli.write_error_message(full) == \
      "cannot write /r/checkpoints/ckpt-2: No space left on device"


# -- flags -------------------------------------------------------------------------------

def test_unknown_optimizer_is_one_line_exit_2(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, "--optimizer=adamax"), run_dir,
                  "--optimizer=adamax", "lars|sgd|adamw|lamb")


def test_contradictory_step_and_schedule_flags(catalogue, tmp_path):
  run_dir = _run_dir(tmp_path)
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, "--train_steps=-1"), run_dir,
                  "--train_steps must be >= 0, got -1")
  _expect_refusal(_finetune(catalogue.good_csv, run_dir, "--warmup_steps=5"), run_dir,
                  "--lr_schedule=constant has no warmup")
  # BiT-HyperRule (the finetune default) needs room for warmup, 3 decays and the end.
  _expect_refusal(run_binary("finetune", *[f for f in FINETUNE if "lr_schedule" not in f],
                             f"--train_csv={catalogue.good_csv}", f"--run_dir={run_dir}"),
                  run_dir, "--train_steps=2 is too short for --lr_schedule=bit_hyperrule")


def test_contradictory_settings_in_library():
  from remedis_tf.data import augment
  from remedis_tf.train import strategy
  from remedis_tf.train.supervised import SupervisedConfig
  with pytest.raises(ConfigError, match="from_projection_layer must be in 0..2, got 3"):
    SupervisedConfig(from_projection_layer=3, projection_layers=2)
  with pytest.raises(ConfigError, match="--strategy=tpu needs --tpu"):
    strategy.make_strategy("tpu", tpu=None)
  with pytest.raises(ConfigError, match="unknown augmentation preset 'xray'"):
    augment.get_preset("xray")
