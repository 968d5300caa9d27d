"""Caffe's layer semantics in Flax: LRN, ceil-rounded max-pooling, grouped conv.

A ported Caffe network only reproduces the original activations if every layer
computes exactly what Caffe computed, so these follow Caffe's definitions rather
than the nearest Flax/XLA built-in.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any


def caffe_pool_output_size(size: int, window: int, stride: int, pad: int = 0) -> int:
  """Output length of Caffe's pooling: it rounds up, so no input is dropped."""
  out = int(math.ceil((size + 2 * pad - window) / stride)) + 1
  # Caffe removes a last window that would start inside the padding only.
  if pad > 0 and (out - 1) * stride >= size + pad:
    out -= 1
  return out


def caffe_conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
  """Output length of a Caffe convolution (it rounds down)."""
  return (size + 2 * pad - kernel) // stride + 1


def max_pool_ceil(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
  """Max-pooling over H and W of an NHWC array with Caffe's ceil rounding.

  XLA's VALID padding rounds down; Caffe lets the last window hang over the
  bottom/right edge, which we reproduce by padding those edges with -inf.
  """
  _, h, w, _ = x.shape
  pads = []
  for size in (h, w):
    out = caffe_pool_output_size(size, window, stride)
    pads.append((0, max(0, (out - 1) * stride + window - size)))
  return lax.reduce_window(
      x,
      jnp.array(-jnp.inf, x.dtype),
      lax.max,
      window_dimensions=(1, window, window, 1),
      window_strides=(1, stride, stride, 1),
      padding=((0, 0), pads[0], pads[1], (0, 0)),
  )


def local_response_norm(
    x: jax.Array,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
) -> jax.Array:
  """Caffe's ACROSS_CHANNELS LRN on NHWC: x / (k + alpha/size * sum x^2)^beta.

  The sum runs over `size` channels centred on each channel, zero-padded at the
  ends; Caffe divides alpha by the window size (PyTorch does the same).
  """
  half = (size - 1) // 2
  squares = jnp.square(x.astype(jnp.float32))
  window_sum = lax.reduce_window(
      squares,
      0.0,
      lax.add,
      window_dimensions=(1, 1, 1, size),
      window_strides=(1, 1, 1, 1),
      padding=((0, 0), (0, 0), (0, 0), (half, size - 1 - half)),
  )
  scale = k + (alpha / size) * window_sum
  return (x.astype(jnp.float32) * scale ** (-beta)).astype(x.dtype)


def _resolve_group_impl(impl: str) -> str:
  if impl == "auto":
    return "split" if jax.default_backend() == "cpu" else "xla"
  if impl not in ("split", "xla"):
    raise ValueError(f"group_impl must be 'auto', 'split' or 'xla', got {impl!r}")
  return impl


class CaffeConv(nn.Module):
  """A Caffe convolution: symmetric padding, stride, and optional groups.

  Parameters are stored as Caffe's grouped layout transposed to HWIO:
  kernel [kh, kw, in_features // groups, features], bias [features]; output
  channels of group g are kernel[..., g*features//groups:(g+1)*features//groups].
  `group_impl` chooses how groups run, with identical results: 'xla' is one
  `feature_group_count` convolution (what accelerators want), 'split' runs the
  groups as separate convolutions (several times faster on CPU), 'auto' picks
  by backend.
  """

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  groups: int = 1
  group_impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    if in_features % self.groups or self.features % self.groups:
      raise ValueError(
          f"{self.name}: channels in={in_features}, out={self.features} are not"
          f" divisible by groups={self.groups}")
    kernel = self.param(
        "kernel",
        nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
        (self.kernel_size, self.kernel_size, in_features // self.groups,
         self.features),
        self.param_dtype,
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      self.param_dtype)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    conv = lambda inp, ker, groups: lax.conv_general_dilated(
        inp, ker,
        window_strides=(self.stride, self.stride),
        padding=((self.padding, self.padding),) * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )
    if self.groups == 1:
      y = conv(x, kernel, 1)
    elif _resolve_group_impl(self.group_impl) == "xla":
      y = conv(x, kernel, self.groups)
    else:
      xs = jnp.split(x, self.groups, axis=-1)
      ks = jnp.split(kernel, self.groups, axis=-1)
      y = jnp.concatenate([conv(xi, ki, 1) for xi, ki in zip(xs, ks)], axis=-1)
    return y + bias.astype(self.dtype)


def leaky_relu(slope: float):
  return lambda x: jnp.where(x >= 0, x, slope * x)



def _upconv_phases(kernel_size: int, pad_lo: int):
  """For a stride-2 up-convolution, which kernel taps feed which output
  parity, and from which input offset: {parity: [(tap, offset), ...]}."""
  phases = {}
  for parity in (0, 1):
    phases[parity] = [(t, (parity + t - pad_lo) // 2)
                      for t in range(kernel_size)
                      if (parity + t - pad_lo) % 2 == 0]
  return phases


class UpConv(nn.Module):
  """A stride-2 up-convolution ("deconvolution") doubling H and W.

  Defined as a stride-1 correlation of the 2x zero-upsampled input with a
  [k, k, in, out] kernel, padded (k//2, k - k//2) so the output is exactly 2x
  the input. `impl` only chooses how it runs, with identical results:
  'xla' uses lhs dilation (what accelerators want); 'subpixel' computes the
  four output phases as one ordinary convolution followed by depth-to-space,
  about 6x faster on CPU where XLA's dilated convolution is slow; 'auto'
  picks by backend.
  """

  features: int
  kernel_size: int = 5
  impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param(
        "kernel", nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
        (k, k, x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      self.param_dtype)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    impl = self.impl
    if impl == "auto":
      impl = "subpixel" if jax.default_backend() == "cpu" else "xla"
    if impl == "xla":
      y = upconv_dilated(x, kernel)
    elif impl == "subpixel":
      y = upconv_subpixel(x, kernel)
    else:
      raise ValueError(f"UpConv impl must be 'auto', 'xla' or 'subpixel',"
                       f" got {impl!r}")
    return y + bias.astype(self.dtype)


def upconv_dilated(x: jax.Array, kernel: jax.Array) -> jax.Array:
  k = kernel.shape[0]
  pad = (k // 2, k - k // 2)
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=(pad, pad),
      lhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def upconv_subpixel(x: jax.Array, kernel: jax.Array) -> jax.Array:
  k, _, cin, cout = kernel.shape
  phases = _upconv_phases(k, k // 2)
  offsets = [d for taps in phases.values() for _, d in taps]
  lo, hi = min(offsets), max(offsets)
  span = hi - lo + 1
  # One kernel holding all four phases: [span, span, cin, 2, 2, cout].
  combined = jnp.zeros((span, span, cin, 2, 2, cout), kernel.dtype)
  for a, rows in phases.items():
    for b, cols in phases.items():
      for t, dy in rows:
        for u, dx in cols:
          combined = combined.at[dy - lo, dx - lo, :, a, b, :].set(kernel[t, u])
  h, w = x.shape[1:3]
  y = lax.conv_general_dilated(
      x, combined.reshape(span, span, cin, 4 * cout), window_strides=(1, 1),
      padding=((-lo, hi), (-lo, hi)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.reshape(x.shape[0], h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(x.shape[0], 2 * h, 2 * w, cout)
