"""timm look-alike artifacts for tests: a safetensors writer independent of the library's
reader, and BiT parameters renamed/re-laid-out the way timm's ``resnetv2_*_bit`` holds them."""

import json
import struct

import numpy as np

_ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16",
              np.dtype("int64"): "I64", np.dtype("uint8"): "U8"}


def write_safetensors(path, tensors, bf16=(), metadata=None):
  """A safetensors writer independent of the library's reader (names in ``bf16`` are stored
  as bfloat16 by truncating float32)."""
  header, chunks, offset = {}, [], 0
  for name, value in tensors.items():
    value = np.ascontiguousarray(value)
    if name in bf16:
      raw = (value.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
      dtype = "BF16"
    else:
      raw = value.astype(value.dtype.newbyteorder("<")).tobytes()
      dtype = _ST_DTYPES[value.dtype]
    header[name] = {"dtype": dtype, "shape": list(value.shape),
                    "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  if metadata:
    header["__metadata__"] = metadata
  blob = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))
  return str(path)


def timm_state(params):
  """BiT params (file layout) → a timm look-alike state dict, mapped independently of
  timm_bit: timm's module names and OIHW conv kernels, head as a 1x1 conv [K, C, 1, 1]."""
  def oihw(a):
    return np.ascontiguousarray(a.transpose(3, 2, 0, 1))
  out = {}
  for key, value in params.items():
    if key == "resnet/root_block/standardized_conv2d/kernel":
      out["stem.conv.weight"] = oihw(value)
    elif key.startswith("resnet/group_norm/"):
      out["norm." + {"gamma": "weight", "beta": "bias"}[key.rsplit("/", 1)[1]]] = value
    elif key == "resnet/head/conv2d/kernel":
      out["head.fc.weight"] = oihw(value)
    elif key == "resnet/head/conv2d/bias":
      out["head.fc.bias"] = value
    else:
      parts = key.split("/")  # resnet, blockB, unitUU, part..., leaf
      b, u = int(parts[1][5:]), int(parts[2][4:])
      prefix = f"stages.{b - 1}.blocks.{u - 1}."
      rest = "/".join(parts[3:])
      names = {"a/group_norm/gamma": "norm1.weight", "a/group_norm/beta": "norm1.bias",
               "b/group_norm/gamma": "norm2.weight", "b/group_norm/beta": "norm2.bias",
               "c/group_norm/gamma": "norm3.weight", "c/group_norm/beta": "norm3.bias",
               "a/standardized_conv2d/kernel": "conv1.weight",
               "b/standardized_conv2d/kernel": "conv2.weight",
               "c/standardized_conv2d/kernel": "conv3.weight",
               "a/proj/standardized_conv2d/kernel": "downsample.conv.weight"}
      out[prefix + names[rest]] = oihw(value) if value.ndim == 4 else value
  return out
