"""The classifier SavedModel's endpoints: what each expects as input (who crops and
resizes), the any-size signature against the evaluation pipeline, and Keras' TFSMLayer."""

import os

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from remedis_tf.data import decode, pipeline
from remedis_tf.data.manifest import Manifest, Record
from remedis_tf.models.heads import ClassificationHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.weights import classifier_export

SIZE, CROP = 32, 0.8


def _export(path):
  backbone = ResNetV2("tiny").build_for(SIZE)
  head = ClassificationHead(2, name="classification_head")

  def model_fn(images):
    out = backbone(images, training=False)
    return {"logits": head(out["pooled"]), "embedding": out["pooled"]}

  model_fn(tf.zeros([1, SIZE, SIZE, 3]))
  return classifier_export.write_classifier_savedmodel(
      model_fn, {"backbone": backbone, "classification_head": head}, path,
      label_names=["a", "b"], task="multilabel", image_size=SIZE, variant="tiny",
      crop_fraction=CROP)


def _png(path, h, w, seed):
  rng = np.random.default_rng(seed)
  # Smooth content, so resampling differences show up as what they are, not as noise.
  yy, xx = np.mgrid[0:h, 0:w]
  img = 0.5 + 0.4 * np.sin(xx[..., None] / (7.0 + 3 * np.arange(3)) + yy[..., None] / 11.0)
  img = np.clip(img + rng.normal(0, 0.02, (h, w, 3)), 0, 1)
  Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
  return Record(str(path), os.path.basename(path), (0.0, 1.0), (1.0, 1.0), patient_id=path.stem)


def test_endpoints_say_and_do_who_crops_and_resizes(tmp_path):
  path = _export(str(tmp_path / "clf"))
  sidecar = classifier_export.read_sidecar(path)
  assert "already centre-cropped" in sidecar["input"] and "by the caller" in sidecar["input"]
  assert set(sidecar["signatures"]) == {"serving_default", "serving_any_size"}
  assert "1024" in sidecar["signatures"]["serving_any_size"]
  module = tf.saved_model.load(path)

  # Keras' TFSMLayer with its default endpoint ('serve') is serving_default.
  x = tf.random.stateless_uniform([2, SIZE, SIZE, 3], seed=[1, 2])
  served = module.signatures["serving_default"](images=x)
  layer = keras.layers.TFSMLayer(path)
  # The same traced graph in one process: equal up to assert_allclose's default rtol 1e-7.
  np.testing.assert_allclose(layer(x)["probabilities"], served["probabilities"])
  any_layer = keras.layers.TFSMLayer(path, call_endpoint="serving_any_size")

  # serving_any_size on full-size decoded images gives what evaluation gives on the files:
  # one image below and one above the 1024-px working size (pre-shrunk by the decoder).
  records = [_png(tmp_path / "small.png", 45, 60, 0), _png(tmp_path / "big.png", 1100, 1300, 1)]
  manifest = Manifest(tuple(records), ("a", "b"), "multilabel", "files")
  batches = list(pipeline.eval_dataset(manifest, image_size=SIZE, batch_size=1,
                                       crop_fraction=CROP))
  for record, batch in zip(records, batches):
    full = decode.read_image_numpy(record.image_path)[None]  # no pre-shrink: the raw pixels
    prepared = module.preprocess(tf.constant(full)).numpy()
    # Area resampling of the decoder's uint8 values then /255, against resampling the float
    # quotients: the same weighted means, float32 rounding apart (a few 2^-24 on [0, 1]);
    # crop, bicubic resize and clip are the same ops. atol 1e-5 is >= 10x that. Skipping
    # the pre-shrink moves the big image's pixels by far more (checked below).
    np.testing.assert_allclose(prepared, batch["image"].numpy(), atol=1e-5)
    got = module.signatures["serving_any_size"](images=tf.constant(full))
    want = module.signatures["serving_default"](images=batch["image"])
    # Same network on inputs equal to ~1e-6 (above): the scores agree to float32 rounding
    # of a tiny net's forward (measured <= 1e-6); atol 1e-4 keeps 10x margin.
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-4)
    np.testing.assert_allclose(any_layer(tf.constant(full))["probabilities"],
                               got["probabilities"])  # same graph, one process
  # rt.eval_dataset's default pre-shrink is evaluate's: without it the big image differs.
  unshrunk = list(pipeline.eval_dataset(manifest, image_size=SIZE, batch_size=1,
                                        crop_fraction=CROP, max_image_size=None))
  np.testing.assert_array_equal(unshrunk[0]["image"], batches[0]["image"])
  assert np.abs(unshrunk[1]["image"].numpy() - batches[1]["image"].numpy()).max() > 1e-3
