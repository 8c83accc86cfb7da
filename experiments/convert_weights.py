r"""Converts backbone weights between BiT .npz, timm, Keras presets, SavedModel / TF Hub and
our checkpoints.

Examples:
  # BiT-M-R50x1.npz -> a hub-style SavedModel ([0,1] images in, feature map out)
  python -m experiments.convert_weights --input BiT-M-R50x1.npz --output bit_m_r50x1_sm
  # a REMEDIS SavedModel directory -> BiT .npz
  python -m experiments.convert_weights --input cxr-50x1-remedis-m --output remedis.npz
  # our exported classifier (evaluate --export_savedmodel) -> BiT .npz with its head
  python -m experiments.convert_weights --input exported_clf --output clf.npz --with_head
  # our training run (latest checkpoint) -> SavedModel
  python -m experiments.convert_weights --input runs/simclr --output exported_sm
  # timm's BiT (Hugging Face resnetv2_50x1_bit.goog_in21k model.safetensors) -> KerasHub
  # preset (keras_hub.models.Backbone.from_preset loads it after `import remedis_tf`)
  python -m experiments.convert_weights --input model.safetensors --output bit_r50x1 \
    --output_format preset --license=Apache-2.0
  # look inside without running anything
  python -m experiments.convert_weights --input cxr-50x1-remedis-m --inspect

Formats (``auto``): input ``*.npz`` is BiT npz; ``kaggle://`` / ``hf://`` is a KerasHub
preset handle (fetched by KerasHub); ``scheme://`` other than gs:// is a TF Hub handle; a directory with ``saved_model.pb`` is a SavedModel; a directory with
``config.json`` + ``model.weights.h5`` is a preset (KerasHub, or the older remedis_tf format); ``*.safetensors`` / ``*.pth`` /
``*.pt`` / ``*.bin`` (or a file whose first bytes say safetensors or torch) is a timm state
dict; anything else is one of our checkpoints (prefix, checkpoint directory or run
directory). Output ``*.npz`` is npz, an existing preset folder is a preset, a path whose
last component contains ``ckpt`` is a checkpoint prefix, anything else a SavedModel
directory; pass ``--output_format=preset`` for a new preset (always KerasHub's format, with a
model card README.md).
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

import tensorflow as tf
from absl import flags

from experiments import _cli
from remedis_tf.errors import CheckpointError, ConfigError
from remedis_tf.models.heads import ClassificationHead
from remedis_tf.models.resnet_v2 import ResNetV2
from remedis_tf.weights import (bit_npz, checkpoint_io, classifier_export, keras_hub_presets,
                                preset, savedmodel,
                                timm_bit)

FORMATS_IN = ("auto", "npz", "savedmodel", "checkpoint", "hub", "timm", "preset")
FORMATS_OUT = ("auto", "npz", "savedmodel", "checkpoint", "preset")

def define_flags() -> None:
  """Registers this binary's flags (only when run as a program, so importing it for tests
  cannot collide with other binaries' flags)."""
  flags.DEFINE_string("input", None, "Weights to read: a BiT .npz, a timm resnetv2_*_bit "
                      "state dict (.safetensors; .pth only with torch installed), a preset "
                      "folder (config.json + model.weights.h5; KerasHub or older remedis_tf "
                      "format; a classifier preset gives its backbone) or a kaggle:// / hf:// "
                      "KerasHub preset handle, a SavedModel directory (local or gs://), a TF Hub handle/URL, "
                      "or one of our checkpoints (prefix, checkpoint directory or run directory).")
  flags.DEFINE_string("output", None, "Where to write: *.npz (BiT layout), a SavedModel "
                      "directory, a checkpoint prefix (name containing 'ckpt'), or a Keras preset "
                      "folder (with --output_format=preset). Not needed with --inspect.")
  flags.DEFINE_string("variant", None, "Backbone variant (e.g. r50x1, r152x2). Inferred from "
                      "the weights' shapes when omitted.")
  flags.DEFINE_enum("input_format", "auto", FORMATS_IN, "Format of --input; auto infers it "
                    "from the path or the file's first bytes (timm: .safetensors/.pth/.pt/.bin; "
                    "preset: a folder with config.json and model.weights.h5; see the module "
                    "docstring).")
  flags.DEFINE_enum("output_format", "auto", FORMATS_OUT, "Format of --output; auto infers it "
                    "from the path (see module docstring). 'preset' writes a KerasHub preset "
                    "folder (config.json, metadata.json, model.weights.h5, README.md model card) "
                    "that keras_hub.models.Backbone.from_preset loads after import remedis_tf.")
  flags.DEFINE_bool("with_head", False, "Also convert the classification head (e.g. BiT's "
                    "1000/21843-class head, or a fine-tuned run's / exported classifier's "
                    "head as a BiT head). An input without a head that can be carried (none, "
                    "or one reading a projection layer) is refused with the reason.")
  flags.DEFINE_integer("image_size", None, "SavedModel output: fix the input signature to "
                       "[B, S, S, 3] (default: any height/width). Preset output: recorded in "
                       "config.json as the intended input size.")
  flags.DEFINE_string("license", None, "Preset output: the licence of the source weights, "
                      "written into the preset's model card (README.md), e.g. 'Apache-2.0'.")
  flags.DEFINE_bool("inspect", False, "Print the input's variables (name, shape, dtype) "
                    "without loading or running it, then exit.")


FLAGS = flags.FLAGS


def detect_input_format(path: str) -> str:
  """npz / hub / savedmodel / preset / timm / checkpoint from the path (a stat, or a file's
  first 16 bytes, at most)."""
  if path.endswith(".npz"):
    return "npz"
  if keras_hub_presets.is_hub_handle(path):  # kaggle:// or hf:// KerasHub preset
    return "preset"
  if "://" in path and not path.startswith("gs://"):
    return "hub"
  if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
    return "savedmodel"
  if preset.is_preset(path):
    return "preset"
  if timm_bit.file_kind(path) is not None:
    return "timm"
  return "checkpoint"


def detect_output_format(path: str) -> str:
  if path.endswith(".npz"):
    return "npz"
  if preset.is_preset(path):
    return "preset"
  if "ckpt" in os.path.basename(path.rstrip("/")):
    return "checkpoint"
  return "savedmodel"


def inspect(path: str, fmt: str) -> List[Tuple[str, tuple, str]]:
  """``(name, shape, dtype)`` of every variable in ``path``, without running anything."""
  if fmt == "npz":
    return [(k, tuple(v.shape), v.dtype.name) for k, v in sorted(bit_npz.read_npz(path).items())]
  if fmt == "timm":
    return [(k, tuple(v.shape), v.dtype.name)
            for k, v in sorted(timm_bit.read_state_dict(path).items())]
  if fmt == "preset":
    return preset.inspect_preset(path)
  if fmt == "savedmodel" and classifier_export.exported_parts(path):
    # Our classifier export: its variables by model part and attribute path (the
    # tf.Variable names are Keras layer names, e.g. bit_tiny/kernel, which say little).
    graph = checkpoint_io.CheckpointGraph(classifier_export.variables_prefix(path))
    return [("/".join(p), tuple(shape), "float32") for part in
            classifier_export.exported_parts(path)
            for p, shape in graph.variables_under((part,)).items()]
  if fmt in ("savedmodel", "hub"):
    return savedmodel.inspect_savedmodel(path)
  prefix = checkpoint_io.resolve_checkpoint(path)
  reader = tf.train.load_checkpoint(prefix)
  dtypes = reader.get_variable_to_dtype_map()
  return [(k, tuple(s), dtypes[k].name) for k, s in tf.train.list_variables(prefix)
          if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]


def inspect_lines(path: str, fmt: str) -> List[str]:
  """``name<TAB>[shape]<TAB>dtype`` lines for :func:`inspect`."""
  return [f"{name}\t{list(shape) if shape is not None else '?'}\t{dtype}"
          for name, shape, dtype in inspect(path, fmt)]


def _checkpoint_variant(prefix: str) -> Tuple[Optional[str], int]:
  """Variant and head size of the ``backbone`` item of one of our checkpoints."""
  shapes = checkpoint_io.CheckpointGraph(prefix).variables_under(("backbone",))
  if not shapes:
    raise CheckpointError(f"{prefix} has no backbone item")
  fake = {}
  for path, shape in shapes.items():
    m = re.match(r"block(\d+)_unit(\d+)$", path[1])
    if m:
      fake[f"resnet/block{int(m.group(1))}/unit{int(m.group(2)):02d}/x"] = shape
    if path[1:] == ("root_conv", "_kernel"):
      fake[bit_npz.ROOT_KERNEL] = shape
  head = shapes.get(("backbone", "head", "_kernel"))
  return bit_npz.guess_variant(fake), (int(head[-1]) if head else 0)


def _from_bit_arrays(arrays, path: str, variant: Optional[str], with_head: bool):
  """``(model, "native")``: a ResNetV2 holding the BiT-named ``arrays`` read from
  ``path``, its variant guessed from their shapes unless given, with the arrays' head
  only when ``with_head``."""
  variant = variant or bit_npz.guess_variant({k: v.shape for k, v in arrays.items()})
  if variant is None:
    raise ConfigError(f"--variant is needed: {path} matches no known variant")
  classes = arrays[bit_npz.HEAD_BIAS].shape[0] if with_head and bit_npz.HEAD_BIAS in arrays else 0
  model = ResNetV2(variant, num_classes=classes).build_for(32)
  bit_npz.assign_bit_arrays(model, arrays, load_head=bool(classes), source=path)
  return model, "native"


def load(path: str, fmt: str, variant: Optional[str], with_head: bool):
  """Returns ``(model, how)`` with the weights of ``path`` loaded."""
  if fmt == "timm":
    state = timm_bit.read_state_dict(path)
    variant = variant or timm_bit.guess_variant(state)
    if variant is None:
      raise ConfigError(f"--variant is needed: {path} matches no known timm BiT model")
    bias = state.get("head.fc.bias")
    classes = int(bias.shape[0]) if with_head and bias is not None else 0
    model = ResNetV2(variant, num_classes=classes).build_for(32)
    timm_bit.load_timm_into(model, state, load_head=bool(classes), source=path)
    return model, "native"
  if fmt == "preset":
    loaded = preset.from_preset(path)
    backbone = getattr(loaded, "backbone", loaded)  # a classifier preset gives its backbone
    if variant and variant != backbone.variant:
      raise ConfigError(f"--variant={variant} but {path} holds a {backbone.variant} backbone")
    if with_head and backbone is not loaded:  # carry the classifier's head as a BiT head
      refusal = classifier_export.head_refusal(path, loaded.from_projection_layer)
      if refusal:
        raise ConfigError(refusal)
      return classifier_export.backbone_with_head(backbone, loaded.classification_head,
                                                  path), "native"
    if backbone.num_classes and not with_head:
      headless = ResNetV2(backbone.variant).build_for(32)
      bit_npz.assign_bit_arrays(headless, bit_npz.backbone_bit_arrays(backbone, False),
                                load_head=False, source=path)
      backbone = headless
    return backbone, "native"
  if fmt == "npz":
    return _from_bit_arrays(bit_npz.read_npz(path), path, variant, with_head)
  if fmt == "savedmodel" and classifier_export.exported_parts(path):
    return (classifier_export.load_exported_backbone(path, variant, with_head),
            "native from classifier SavedModel")
  if fmt in ("savedmodel", "hub"):
    if not with_head:
      loaded = savedmodel.load_backbone(path, variant)
      return loaded.model, loaded.how
    arrays, _ = savedmodel.savedmodel_bit_arrays(path)
    return _from_bit_arrays(arrays, path, variant, with_head)
  prefix = checkpoint_io.resolve_checkpoint(path)
  guessed, classes = _checkpoint_variant(prefix)
  variant = variant or guessed
  if variant is None:
    raise ConfigError(f"--variant is needed: the backbone in {prefix} matches no known variant")
  model = ResNetV2(variant, num_classes=classes if with_head else 0).build_for(32)
  checkpoint_io.restore_backbone(model, prefix)
  if with_head and not classes:
    return _with_classification_head(model, prefix), "native"
  return model, "native"


def _with_classification_head(backbone: ResNetV2, prefix: str) -> ResNetV2:
  """``backbone`` with the fine-tuned ``classification_head`` of checkpoint ``prefix`` as BiT
  head; ConfigError when the checkpoint has none, or it reads a projection layer."""
  graph = checkpoint_io.CheckpointGraph(prefix)
  if "classification_head" not in graph.top_level():
    raise ConfigError(f"--with_head: {prefix} has no classification head (it holds: "
                      f"{', '.join(graph.top_level())}); convert without --with_head")
  if "projection_head" in graph.top_level():
    raise ConfigError(classifier_export.head_refusal(prefix, -1))
  kernel = next(s for p, s in graph.variables_under(("classification_head",)).items()
                if len(s) == 2)
  head = ClassificationHead(int(kernel[1]), name="classification_head")
  head(tf.zeros((1, int(kernel[0]))))
  checkpoint_io.restore_items(prefix, classification_head=head)
  return classifier_export.backbone_with_head(backbone, head, prefix)


def save(model, path: str, fmt: str, with_head: bool, image_size: Optional[int],
         source: str = "", license: Optional[str] = None) -> str:  # pylint: disable=redefined-builtin
  """Writes ``model`` to ``path`` in ``fmt``; returns what was written."""
  if fmt == "checkpoint":
    if tf.io.gfile.isdir(path):
      path = os.path.join(path, "backbone")
    return checkpoint_io.save_backbone_checkpoint(model, path)
  if not isinstance(model, ResNetV2):
    raise ConfigError(f"--output_format={fmt} needs a BiT-named input; this SavedModel was "
                      "wrapped as-is, so only --output_format=checkpoint is possible")
  if fmt == "npz":
    return bit_npz.save_bit_npz(model, path, include_head=with_head)
  if fmt == "preset":
    return preset.save_to_preset(model, path, image_size=image_size, source=source,
                                 card={"license": license})
  return savedmodel.export_savedmodel(model, path, image_size=image_size)


def convert(input_path: str, output_path: str, variant: Optional[str] = None,
            input_format: str = "auto", output_format: str = "auto", with_head: bool = False,
            image_size: Optional[int] = None, license: Optional[str] = None  # pylint: disable=redefined-builtin
            ) -> str:
  """Reads ``input_path`` and writes ``output_path``; returns a one-line summary
  (``license``: for a preset's model card)."""
  fmt_in = detect_input_format(input_path) if input_format == "auto" else input_format
  fmt_out = detect_output_format(output_path) if output_format == "auto" else output_format
  model, how = load(input_path, fmt_in, variant, with_head)
  if with_head and not getattr(model, "num_classes", 0):
    raise ConfigError(f"--with_head: {input_path} has no classification head to carry; "
                      "convert without --with_head")
  written = save(model, output_path, fmt_out, with_head, image_size,
                 source=f"{input_path} ({fmt_in})", license=license)
  head = getattr(model, "num_classes", 0)
  return (f"{input_path} ({fmt_in}, {getattr(model, 'variant', '?')}, loaded {how}"
          f"{f', head {head} classes' if head else ''}) -> {written} ({fmt_out})")


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.input:
    raise ConfigError("--input is required")
  if FLAGS.inspect:
    fmt = detect_input_format(FLAGS.input) if FLAGS.input_format == "auto" else FLAGS.input_format
    print("\n".join(inspect_lines(FLAGS.input, fmt)))
    return
  if not FLAGS.output:
    raise ConfigError("--output is required (or pass --inspect)")
  print(convert(FLAGS.input, FLAGS.output, FLAGS.variant, FLAGS.input_format,
                FLAGS.output_format, FLAGS.with_head, FLAGS.image_size, FLAGS.license))


if __name__ == "__main__":
  define_flags()
  _cli.run_main(main)
