"""Fixtures for the bad-input catalogue: tiny images, CSVs, weight files, and a helper that
runs a binary in a subprocess and measures its peak memory."""

import dataclasses
import errno
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "data"))
from benchmarks import child_memory  # noqa: E402  pylint: disable=wrong-import-position
import image_files as F  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_GOOD = 8
LABELS = "A,B"
# Flags every finetune run of the catalogue shares: tiny model, 2 steps, no HyperRule.
FINETUNE = ("--train_source=csv", f"--train_label_columns={LABELS}", "--variant=tiny",
            "--image_size=32", "--train_steps=2", "--batch_size=4", "--lr_schedule=constant",
            "--log_every=1")


@dataclasses.dataclass
class Result:
  """What a binary run did: exit code, output, peak resident memory (MiB)."""
  returncode: int
  stdout: str
  stderr: str
  peak_rss_mb: float

  def error_line(self) -> str:
    """The single ``error:`` line; asserts it is there once, last, with no traceback."""
    assert "Traceback" not in self.stderr, self.stderr[-3000:]
    lines = [l for l in self.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error: ")]
    assert len(errors) == 1, self.stderr[-3000:]
    assert lines[-1] == errors[0], self.stderr[-3000:]
    return errors[0]


def run_binary(name: str, *args: str, timeout: float = 240, env=None) -> Result:
  """Runs ``python -m experiments.<name> args`` from the repository root.

  ``env``: extra environment variables. Peak RSS is the child's own ``VmHWM``, polled
  every 20 ms (``benchmarks.child_memory``; not ``wait4``'s ``ru_maxrss``, which a vfork'd
  child inherits from this big pytest process).
  """
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
             CUDA_VISIBLE_DEVICES="", **(env or {}))
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen([sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT,
                            env=env, stdout=out, stderr=err)
    _, peak, _ = child_memory.wait_with_peak(proc)
    out.seek(0)
    err.seek(0)
    return Result(proc.returncode, out.read(), err.read(), peak)


def _jpeg_corrupt(rng) -> bytes:
  """A JPEG with intact headers and end marker but wrecked entropy data (fails to decode)."""
  data = bytearray(F.jpeg_bytes(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)))
  sos = data.find(b"\xff\xda")
  return bytes(data[:sos + 12]) + b"\xff\xd9"


def _huge_png(path: str, side: int = 12000) -> None:
  """A side x side grey PNG, almost constant so the file stays small (~140 KB)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.zeros((side, side), np.uint8)
  image[:64, :64] = 255
  Image.fromarray(image).save(path, optimize=True)


@dataclasses.dataclass
class Catalogue:
  """Paths of the session's files (see :func:`catalogue`)."""
  root: str
  good_csv: str
  files: dict
  weights: dict

  def csv_with(self, name: str, extra_rows, header: str = "Path,Patient,A,B",
               good: bool = True) -> str:
    """Writes ``name`` = the good rows (optionally) + ``extra_rows``; returns its path."""
    rows = [header]
    if good:
      rows += [f"img/{i}.png,p{i},{i % 2},{(i // 2) % 2}" for i in range(NUM_GOOD)]
    rows += list(extra_rows)
    path = os.path.join(self.root, name)
    with open(path, "w") as f:
      f.write("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory) -> Catalogue:
  """Eight good 32-px PNGs, every kind of bad/odd image, a good CSV and weight files."""
  root = str(tmp_path_factory.mktemp("catalogue"))
  img = os.path.join(root, "img")
  os.makedirs(img)
  rng = np.random.default_rng(0)
  for i in range(NUM_GOOD):
    F.write(os.path.join(img, f"{i}.png"),
            F.png_bytes(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)))
  good_png = F.png_bytes(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8))
  rgb = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
  grey16 = rng.integers(0, 65536, (32, 32)).astype(np.uint16)
  kinds = {
      "truncated.png": good_png[:len(good_png) // 2],
      "corrupt.jpg": _jpeg_corrupt(rng),
      "notes.png": b"Patient notes: this is a text file, not an image\n" * 8,
      "empty.png": b"",
      "cmyk.jpg": F.jpeg_bytes(rgb, mode="CMYK"),
      "grey16.png": F.png_bytes(grey16),
      "nopixels.dcm": F.dicom_bytes(np.zeros((32, 32), np.uint16), with_pixels=False),
  }
  files = {k: F.write(os.path.join(img, k), v) for k, v in kinds.items()}
  files["missing.png"] = os.path.join(img, "missing.png")
  files["huge.png"] = os.path.join(img, "huge.png")
  _huge_png(files["huge.png"])
  files["_rgb"], files["_grey16"] = rgb, grey16
  cat = Catalogue(root=root, good_csv="", files=files, weights={})
  cat.good_csv = cat.csv_with("good.csv", [])
  cat.weights = _weights(root)
  return cat


def _weights(root: str) -> dict:
  """tiny.npz, an npz missing one key, small.npz (other width), a 'small' checkpoint and a
  SavedModel directory without variables/."""
  from remedis_tf.models.resnet_v2 import ResNetV2  # pylint: disable=g-import-not-at-top
  from remedis_tf.weights import bit_npz, checkpoint_io  # pylint: disable=g-import-not-at-top
  out = os.path.join(root, "weights")
  os.makedirs(out)
  tiny = ResNetV2("tiny").build_for(32)
  paths = {"tiny.npz": bit_npz.save_bit_npz(tiny, os.path.join(out, "tiny.npz"))}
  arrays = bit_npz.read_npz(paths["tiny.npz"])
  paths["dropped_key"] = sorted(k for k in arrays if "block1/unit01/a/" in k)[0]
  del arrays[paths["dropped_key"]]
  paths["missing_key.npz"] = os.path.join(out, "missing_key.npz")
  np.savez(paths["missing_key.npz"], **arrays)
  small = ResNetV2("small").build_for(32)
  paths["small.npz"] = bit_npz.save_bit_npz(small, os.path.join(out, "small.npz"))
  paths["small_ckpt"] = checkpoint_io.save_backbone_checkpoint(
      small, os.path.join(out, "small_ckpt", "backbone"))
  sm = os.path.join(out, "sm_no_variables")
  os.makedirs(sm)
  with open(os.path.join(sm, "saved_model.pb"), "wb") as f:
    f.write(b"\x08\x01")  # a tiny but well-formed SavedModel proto header
  paths["sm_no_variables"] = sm
  return paths


def try_mount_tmpfs(path: str, options: str) -> bool:
  """Mounts a tmpfs at ``path`` with ``options`` (root only); False when not possible."""
  os.makedirs(path, exist_ok=True)
  if not shutil.which("mount") or os.geteuid() != 0:
    return False
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                        capture_output=True, check=False)
  return proc.returncode == 0


def unmount(path: str) -> None:
  subprocess.run(["umount", path], capture_output=True, check=False)


@pytest.fixture
def tmpfs(tmp_path):
  """``make(name, options)`` → a mounted tmpfs path, or None without mount rights.
  Unmounted after the test."""
  mounted = []

  def make(name: str, options: str):
    path = str(tmp_path / name)
    if try_mount_tmpfs(path, options):
      mounted.append(path)
      return path
    return None

  yield make
  for path in mounted:
    unmount(path)


NO_SPACE = errno.ENOSPC
# Cloud Storage made unreachable whatever the network: every request goes to a proxy on a
# closed local port (connection refused), and TF's own 10 GCS retries (~3 min) are off.
UNREACHABLE_GCS = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                   "no_proxy": "", "NO_PROXY": "", "GCS_RETRY_CONFIG_MAX_RETRIES": "0"}
