"""What each encoder expects as input, and the adapter that produces it.

The input pipeline always yields Caffe-space images (float32 BGR on the
0-255 scale minus `data.mean`), and decoders reconstruct that space, where the
error is measured. An encoder's `preprocessing` block says what the network
itself was trained on:

  x = (pixels[channel_order] * scale - mean) / std

with `pixels` the 0-255 image and `mean`/`std` per channel in `channel_order`.
Caffe networks (BGR, scale 1, std 1) see the pipeline's images directly;
torchvision networks (RGB, scale 1/255, ImageNet mean/std) get them through
`encoder_input_fn`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

FIELDS = ("channel_order", "mean", "scale", "std")

# bvlc_reference_caffenet / bvlc_alexnet: the per-channel average of Caffe's
# ImageNet mean image (data.mean_file reproduces the image itself).
CAFFE_ALEXNET = dict(channel_order="BGR", mean=(104.0, 117.0, 123.0),
                     scale=1.0, std=(1.0, 1.0, 1.0))
# VGG_ILSVRC_16_layers: the mean the authors published with the model.
CAFFE_VGG = dict(channel_order="BGR", mean=(103.939, 116.779, 123.68),
                 scale=1.0, std=(1.0, 1.0, 1.0))
# ResNet-50 of the authors' Caffe release: the per-channel average of its
# per-pixel mean image ResNet_mean.binaryproto (BGR; data.mean_file
# reproduces the image itself).
CAFFE_RESNET = dict(channel_order="BGR", mean=(103.063, 115.903, 123.152),
                    scale=1.0, std=(1.0, 1.0, 1.0))
# torchvision's GoogLeNet: its transform_input turns the ImageNet-normalised
# input back into (x / 255 - 0.5) / 0.5, which is therefore what it takes.
TORCHVISION_GOOGLENET = dict(channel_order="RGB", mean=(0.5, 0.5, 0.5),
                             scale=1.0 / 255.0, std=(0.5, 0.5, 0.5))
# Every other torchvision ImageNet classifier.
TORCHVISION = dict(channel_order="RGB", mean=(0.485, 0.456, 0.406),
                   scale=1.0 / 255.0, std=(0.229, 0.224, 0.225))


def problems(pre: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
  """Problems with an encoder.preprocessing block for this data config."""
  out = []
  missing = [f for f in FIELDS if f not in pre]
  if missing:
    return [f"encoder.preprocessing lacks {', '.join(missing)}; start from"
            " presets.encoder_config(arch)."]
  if pre["channel_order"] not in ("BGR", "RGB"):
    out.append(f"encoder.preprocessing.channel_order must be 'BGR' or 'RGB',"
               f" got {pre['channel_order']!r}.")
  for field in ("mean", "std"):
    if len(tuple(pre[field])) != 3:
      out.append(f"encoder.preprocessing.{field} needs 3 values (one per"
                 f" channel), got {tuple(pre[field])}.")
  if any(float(s) == 0 for s in pre["std"]) or float(pre["scale"]) == 0:
    out.append("encoder.preprocessing.std and .scale must be non-zero.")
  if data.get("mean_file") and not is_caffe_space(pre):
    out.append(
        f"data.mean_file is a Caffe mean image, but this encoder normalises"
        f" per channel (encoder.preprocessing={dict(pre)}); unset"
        " data.mean_file (data.mean is then added back exactly).")
  return out


def is_caffe_space(pre: Mapping[str, Any]) -> bool:
  """True if the encoder takes BGR 0-255 minus a mean, like the pipeline."""
  return (pre["channel_order"] == "BGR" and float(pre["scale"]) == 1.0
          and all(float(s) == 1.0 for s in pre["std"]))


def encoder_input_fn(pre: Mapping[str, Any], data: Mapping[str, Any]
                     ) -> Callable[[jax.Array], jax.Array]:
  """(pipeline images [N, H, W, 3]) -> what the encoder expects.

  Caffe-space encoders: the pipeline's mean subtraction stands for theirs.
  With `data.mean_file` (Caffe's mean image) that is exactly the encoder's
  input; otherwise the difference of the per-channel means is added, which is
  zero, i.e. the identity, in every preset. Other encoders: `data.mean` is
  added back, channels reordered, then scaled and normalised.
  """
  enc_mean = np.asarray(pre["mean"], np.float64)
  if is_caffe_space(pre):
    if data.get("mean_file"):
      return lambda x: x
    shift = np.asarray(data["mean"], np.float64) - enc_mean
    if not shift.any():
      return lambda x: x
    shift32 = shift.astype(np.float32)
    return lambda x: x + jnp.asarray(shift32, x.dtype)
  if data.get("mean_file"):
    raise ValueError(problems(pre, data)[-1])
  data_mean = np.asarray(data["mean"], np.float32)
  rgb = pre["channel_order"] == "RGB"
  # x_enc = (bgr[order] * scale - mean) / std, folded into one multiply-add.
  gain = float(pre["scale"]) / np.asarray(pre["std"], np.float64)
  offset = -enc_mean / np.asarray(pre["std"], np.float64)
  gain32, offset32 = gain.astype(np.float32), offset.astype(np.float32)

  def adapt(x: jax.Array) -> jax.Array:
    bgr = x + jnp.asarray(data_mean, x.dtype)
    ordered = bgr[..., ::-1] if rgb else bgr
    return (ordered * jnp.asarray(gain32, x.dtype)
            + jnp.asarray(offset32, x.dtype))

  return adapt
