"""The up-convolutional decoder that maps features back to an image.

One family, two entry stems, after Dosovitskiy & Brox (2016):
  * vector features (fc6, fc7, fc8, prob): fully connected layers, a reshape
    to a small map (4x4x256), then 5x5 stride-2 up-convolutions;
  * map features (conv1..conv5): 3x3 convolutions at the feature resolution,
    then 5x5 stride-2 up-convolutions.
Every hidden layer is followed by a leaky ReLU; the last up-convolution has 3
channels and no nonlinearity. Vector decoders overshoot the input size and are
centre-cropped to it; map decoders stop at the power-of-two multiple of the
feature size nearest the input size and are compared with the resized input.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inverter.models import layers


class UpconvDecoder(nn.Module):
  """Features -> BGR image (mean-subtracted, 0-255 scale), NHWC."""

  fc_widths: Sequence[int] = ()
  start_shape: Sequence[int] = (4, 4, 256)
  conv_channels: Sequence[int] = ()
  upconv_channels: Sequence[int] = (128, 64, 3)
  kernel_size: int = 5
  leak: float = 0.2
  upconv_impl: str = "auto"
  crop_to: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    act = layers.leaky_relu(self.leak)
    h = features.astype(self.dtype)
    if h.ndim == 2:
      for i, width in enumerate(self.fc_widths):
        h = act(nn.Dense(width, dtype=self.dtype, name=f"fc{i + 1}")(h))
      size = math.prod(self.start_shape)
      if h.shape[-1] != size:
        raise ValueError(
            f"The last decoder fc width {h.shape[-1]} must equal the product"
            f" of decoder.start_shape {tuple(self.start_shape)} = {size}.")
      h = h.reshape(h.shape[0], *self.start_shape)
    elif h.ndim != 4:
      raise ValueError(f"Decoder features must be [batch, dim] or"
                       f" [batch, H, W, C], got shape {tuple(features.shape)}.")
    for i, width in enumerate(self.conv_channels):
      h = act(nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype,
                      name=f"conv{i + 1}")(h))
    last = len(self.upconv_channels) - 1
    for i, width in enumerate(self.upconv_channels):
      h = layers.UpConv(width, self.kernel_size, impl=self.upconv_impl,
                        dtype=self.dtype, name=f"upconv{i + 1}")(h)
      if i < last:
        h = act(h)
    h = h.astype(jnp.float32)
    if self.crop_to is not None and h.shape[1] > self.crop_to:
      top = (h.shape[1] - self.crop_to) // 2
      left = (h.shape[2] - self.crop_to) // 2
      h = h[:, top:top + self.crop_to, left:left + self.crop_to]
    return h


def num_upconvs(feature_size: int, input_size: int, overshoot: bool) -> int:
  """Number of stride-2 up-convolutions from `feature_size` to `input_size`.

  With `overshoot` (vector decoders, cropped afterwards) the smallest count
  reaching at least the input size; otherwise the count whose output is
  nearest the input size on a log scale (27 -> 216 for 227, 6 -> 192).
  """
  ratio = input_size / feature_size
  if overshoot:
    return max(1, math.ceil(math.log2(ratio) - 1e-9))
  return max(1, round(math.log2(ratio)))


def halving_channels(start: int, count: int) -> tuple[int, ...]:
  """`count` up-convolution widths, halving from `start`, the last being 3."""
  widths = [max(start // 2 ** (i + 1), 8) for i in range(count - 1)]
  return tuple(widths) + (3,)


def resolve(decoder_cfg: Mapping[str, Any], feature_shape: Sequence[int],
            input_size: int) -> dict[str, Any]:
  """Fills the automatic fields of the decoder config for one feature shape.

  Returns the full set of UpconvDecoder arguments plus `output_size`, so the
  table in docs/networks.md and the training loop agree on one definition.
  """
  is_vector = len(feature_shape) == 1
  if is_vector:
    start = tuple(int(s) for s in decoder_cfg["start_shape"])
    base_size, base_width = start[0], start[-1]
    stem = dict(fc_widths=tuple(decoder_cfg["fc_widths"]), start_shape=start,
                conv_channels=())
  else:
    base_size = int(feature_shape[0])
    convs = tuple(decoder_cfg["conv_channels"])
    base_width = convs[-1] if convs else int(feature_shape[-1])
    stem = dict(fc_widths=(), start_shape=tuple(decoder_cfg["start_shape"]),
                conv_channels=convs)
  upconvs = decoder_cfg.get("upconv_channels")
  if upconvs:
    upconvs = tuple(int(c) for c in upconvs)
    if upconvs[-1] != 3:
      raise ValueError("decoder.upconv_channels must end with 3 (BGR), got"
                       f" {upconvs}.")
  else:
    count = num_upconvs(base_size, input_size, overshoot=is_vector)
    upconvs = halving_channels(base_width, count)
  raw_size = base_size * 2 ** len(upconvs)
  output_size = min(raw_size, input_size) if is_vector else raw_size
  return dict(**stem, upconv_channels=upconvs,
              kernel_size=int(decoder_cfg["kernel_size"]),
              leak=float(decoder_cfg["leak"]),
              upconv_impl=decoder_cfg.get("upconv_impl", "auto"),
              crop_to=input_size if is_vector else None,
              output_size=output_size)


def from_config(decoder_cfg: Mapping[str, Any], feature_shape: Sequence[int],
                input_size: int, dtype: Any = jnp.float32) -> UpconvDecoder:
  args = resolve(decoder_cfg, feature_shape, input_size)
  args.pop("output_size")
  return UpconvDecoder(**args, dtype=dtype)
