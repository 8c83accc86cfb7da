"""export_embeddings from run directories, checkpoints, BiT .npz and classifier SavedModels."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from remedis_tf.data import pipeline
from remedis_tf.errors import ConfigError
from remedis_tf.eval import embedding
from remedis_tf.models.heads import ProjectionHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.optim.factory import OptimizerConfig
from remedis_tf.runs import classifier, embed, stages
from remedis_tf.train.loop import LoopConfig
from remedis_tf.train.supervised import SupervisedConfig
from remedis_tf.weights import bit_npz
from tests.eval.tiny_data import brightness_set

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("embedding"))
  manifest, _ = brightness_set(root, "set", 5, seed=0, label_names=("Bright", "Noise"))
  return root, manifest


def _assert_same_features(got, want):
  """The same float32 backbone through two code paths (batched export, SavedModel, direct
  call): equal up to rounding, relative to the features' scale. Tolerance as for BiT
  parity (tests/weights/bit_reference.py REL_TOL = 1e-4: a float32 forward is within
  4.2e-6 of float64 relative to the output's scale in every numerics-matrix row, so two
  float32 paths are within 8.4e-6; >= 10x margin). A wrong image size or crop is off by O(1).
  """
  want = np.asarray(want)
  np.testing.assert_allclose(got, want, atol=1e-4 * np.max(np.abs(want)))


def _pooled(backbone, manifest):
  """Independent reference: eval preprocessing, then the backbone's pooled output."""
  batch = next(iter(pipeline.eval_dataset(manifest, image_size=SIZE, batch_size=100)))
  return backbone(batch["image"], training=False)["pooled"].numpy()


def _check_arrays(arrays, manifest, dim):
  assert arrays["embeddings"].dtype == np.float32
  assert arrays["embeddings"].shape == (len(manifest), dim)
  assert arrays["ids"].dtype.kind == "U" and arrays["patients"].dtype.kind == "U"
  assert list(arrays["ids"]) == [r.example_id for r in manifest.records]
  assert list(arrays["patients"]) == [r.patient_id for r in manifest.records]
  np.testing.assert_array_equal(arrays["labels"], manifest.label_matrix())
  np.testing.assert_array_equal(arrays["mask"], manifest.mask_matrix())
  assert list(arrays["label_names"]) == list(manifest.label_names)


def test_contrastive_checkpoint_to_npz(data, tmp_path):
  _, manifest = data
  run_dir = str(tmp_path / "stage2")
  tf.keras.utils.set_random_seed(4)
  backbone = ResNetV2("tiny").build_for(SIZE)
  head = ProjectionHead(2, backbone.output_channels, 16, name="projection_head")
  head(tf.zeros((1, backbone.output_channels)))
  tf.train.CheckpointManager(tf.train.Checkpoint(backbone=backbone, projection_head=head),
                             os.path.join(run_dir, "checkpoints"), 1).save(3)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    json.dump({"stage": "contrastive", "contrastive": {"variant": "tiny"},
               "augment": {"image_size": SIZE}}, f)
  out = str(tmp_path / "emb.npz")
  info = embed.export_embeddings(run_dir, manifest, out, log=lambda _: None)
  assert info["image_size"] == SIZE and info["dim"] == backbone.output_channels
  with np.load(out, allow_pickle=False) as npz:
    arrays = {k: npz[k] for k in npz.files}
  _check_arrays(arrays, manifest, backbone.output_channels)
  _assert_same_features(arrays["embeddings"], _pooled(backbone, manifest))
  assert list(arrays["model"]) == [run_dir]


def test_bit_npz_to_npy_directory(data, tmp_path):
  _, manifest = data
  tf.keras.utils.set_random_seed(5)
  backbone = ResNetV2("tiny").build_for(SIZE)
  npz = bit_npz.save_bit_npz(backbone, str(tmp_path / "tiny.npz"), include_head=False)
  out = str(tmp_path / "emb_dir")
  with pytest.raises(ConfigError, match="image size"):
    embed.export_embeddings(npz, manifest, out, variant="tiny", log=lambda _: None)
  embed.export_embeddings(npz, manifest, out, image_size=SIZE, variant="tiny",
                              log=lambda _: None)
  assert json.load(open(os.path.join(out, "embeddings.json")))["arrays"]["embeddings"][
      "shape"] == [len(manifest), backbone.output_channels]
  arrays = embedding.read_embeddings(out)
  _check_arrays(arrays, manifest, backbone.output_channels)
  _assert_same_features(arrays["embeddings"], _pooled(backbone, manifest))


def test_supervised_run_and_its_savedmodel_agree(data, tmp_path):
  _, manifest = data
  run_dir = str(tmp_path / "ft")
  opt = OptimizerConfig(name="sgd", base_lr=0.05, lr_scaling="none", schedule="constant",
                        total_steps=2, weight_decay=0.0)
  stages.run_supervised(manifest, SupervisedConfig(variant="tiny", global_batch_size=5), opt,
                        None, SIZE, LoopConfig(run_dir, 2), log=lambda _: None)
  a = embedding.read_embeddings(
      embed.export_embeddings(run_dir, manifest, str(tmp_path / "a.npz"),
                                  log=lambda _: None)["out_path"])
  task, _ = stages.load_classifier(run_dir)
  _check_arrays(a, manifest, task.backbone.output_channels)
  _assert_same_features(a["embeddings"], _pooled(task.backbone, manifest))
  saved = classifier.export_classifier_savedmodel(task, str(tmp_path / "clf"))
  b = embedding.read_embeddings(
      embed.export_embeddings(saved, manifest, str(tmp_path / "b.npz"),
                                  log=lambda _: None)["out_path"])
  _assert_same_features(b["embeddings"], a["embeddings"])
  # The classifier preset gives the same features at its recorded image size.
  exported = classifier.export_classifier_preset(task, str(tmp_path / "clf_preset"))
  c = embedding.read_embeddings(
      embed.export_embeddings(exported, manifest, str(tmp_path / "c.npz"),
                                  log=lambda _: None)["out_path"])
  np.testing.assert_array_equal(c["embeddings"], a["embeddings"])


def test_bare_checkpoint_needs_variant_and_object_arrays_refused(data, tmp_path):
  _, manifest = data
  prefix = tf.train.Checkpoint(backbone=ResNetV2("tiny").build_for(SIZE)).write(
      str(tmp_path / "ckpt" / "bare"))
  with pytest.raises(ConfigError, match="variant"):
    embed.export_embeddings(prefix, manifest, str(tmp_path / "x.npz"), image_size=SIZE,
                                log=lambda _: None)
  with pytest.raises(ConfigError, match="pickle"):
    embedding.write_arrays({"bad": np.array([{"a": 1}], dtype=object)},
                           str(tmp_path / "y.npz"))
