"""TFDS source: the not-installed error and the example conversion (no TFDS needed)."""

import builtins

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.data import tfds_source
from remedis_tf.errors import ConfigError

# Tolerances here (docs/testing.md):
# derived: uint8 / 255 in float32 is within 2^-24 (6e-8) of the float64 quotient: atol 1e-7.


def test_missing_tfds_says_how_to_install(monkeypatch):
  real_import = builtins.__import__

  def fake_import(name, *args, **kwargs):
    if name.startswith("tensorflow_datasets"):
      raise ImportError("No module named 'tensorflow_datasets'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", fake_import)
  with pytest.raises(ConfigError, match=r"pip install 'remedis_tf\[tfds\]'"):
    tfds_source.load_tfds("patch_camelyon")


def _fake(num, channels, dtype=np.uint8):
  rng = np.random.RandomState(0)
  images = rng.randint(0, 255, (num, 6, 5, channels)).astype(dtype)
  labels = np.arange(num) % 3
  return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}), images, labels


def test_convert_binary_multiclass_unlabelled():
  ds, images, labels = _fake(4, 3)
  binary = list(tfds_source.convert_examples(
      ds.map(lambda e: {**e, "label": e["label"] % 2}), 2, id_prefix="pc/").as_numpy_iterator())
  np.testing.assert_allclose(binary[1]["image"], images[1] / 255.0, atol=1e-7)
  # labels 0, 1, 2, 0 mod 2
  assert [b["label"].tolist() for b in binary] == [[0.0], [1.0], [0.0], [0.0]]
  assert binary[2]["id"] == b"pc/2" and binary[0]["mask"].tolist() == [1.0]
  multi = list(tfds_source.convert_examples(ds, 3).as_numpy_iterator())
  np.testing.assert_array_equal([m["label"] for m in multi], np.eye(3)[labels])
  grey, gimages, _ = _fake(2, 1)
  unl = list(tfds_source.convert_examples(grey, None, label_key=None).as_numpy_iterator())
  assert unl[0]["label"].shape == (0,) and unl[0]["image"].shape == (6, 5, 3)
  np.testing.assert_allclose(unl[0]["image"][..., 2], gimages[0, ..., 0] / 255.0, atol=1e-7)
  with pytest.raises(ConfigError):
    tfds_source.convert_examples(ds, 1)
