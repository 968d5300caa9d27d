"""Caffe's layer semantics in Flax: LRN, ceil-rounded max-pooling, grouped conv.

A ported Caffe network only reproduces the original activations if every layer
computes exactly what Caffe computed, so these follow Caffe's definitions rather
than the nearest Flax/XLA built-in. Where XLA's CPU code for the direct form is
slow (grouped convolutions, strided kernel gradients, the max-pool gradient),
an equivalent form runs on CPU ('auto'); accelerators get the direct form.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

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


def _resolve_impl(what: str, impl: str, choices: tuple[str, ...],
                  cpu_choice: str) -> str:
  """'auto' -> `cpu_choice` on CPU, 'xla' elsewhere; validates the name."""
  if impl == "auto":
    return cpu_choice if jax.default_backend() == "cpu" else "xla"
  if impl not in choices:
    raise ValueError(f"{what} must be 'auto' or one of {', '.join(choices)};"
                     f" got {impl!r}")
  return impl


def max_pool_ceil(x: jax.Array, window: int = 3, stride: int = 2,
                  impl: str = "auto") -> jax.Array:
  """Max-pooling over H and W of an NHWC array with Caffe's ceil rounding.

  XLA's VALID padding rounds down; Caffe lets the last window hang over the
  bottom/right edge, which we reproduce by padding those edges with -inf.
  `impl` only chooses how it runs: 'xla' is one `reduce_window` (what
  accelerators want); 'slices' takes the maximum of the window*window strided
  slices, with its own derivative rule, because XLA's CPU gradient of
  `reduce_window` (select-and-scatter) is 5-10x slower than the whole forward
  pass; 'auto' picks by backend. Both send a window's gradient to the first
  maximal element in row-major window order, as Caffe does.
  """
  impl = _resolve_impl("max_pool_ceil impl", impl, ("xla", "slices"),
                       "slices")
  if impl == "slices":
    return _max_pool_slices(x, window, stride)
  _, pad_h, pad_w = _pool_geometry(x.shape, window, stride)
  # The initial value must be a concrete constant (NumPy, not jnp): a traced
  # one makes JAX fall back to a generic reduction it cannot differentiate.
  return lax.reduce_window(
      x,
      np.array(-np.inf, x.dtype),
      lax.max,
      window_dimensions=(1, window, window, 1),
      window_strides=(1, stride, stride, 1),
      padding=((0, 0), (0, pad_h), (0, pad_w), (0, 0)),
  )


def _pool_geometry(shape, window: int, stride: int):
  """((out_h, out_w), bottom padding, right padding) of Caffe's pooling."""
  outs, pads = [], []
  for size in shape[1:3]:
    out = caffe_pool_output_size(size, window, stride)
    outs.append(out)
    pads.append(max(0, (out - 1) * stride + window - size))
  return tuple(outs), pads[0], pads[1]


def _pool_windows(x: jax.Array, window: int, stride: int, fill: float):
  """Per window element (row-major), the strided slice of the `fill`-padded
  input that holds this element of every output's window."""
  (out_h, out_w), pad_h, pad_w = _pool_geometry(x.shape, window, stride)
  xp = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)),
               constant_values=fill)
  n, _, _, c = x.shape
  return [lax.slice(
      xp, (0, i, j, 0),
      (n, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
      (1, stride, stride, 1))
          for i in range(window) for j in range(window)]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _max_pool_slices(x: jax.Array, window: int, stride: int) -> jax.Array:
  return functools.reduce(jnp.maximum, _pool_windows(x, window, stride,
                                                     -np.inf))


@_max_pool_slices.defjvp
def _max_pool_slices_jvp(window, stride, primals, tangents):
  (x,), (dx,) = primals, tangents
  slices = _pool_windows(x, window, stride, -np.inf)
  y = functools.reduce(jnp.maximum, slices)
  # Each output moves with the first window element equal to its maximum,
  # so reverse mode sends the gradient there: Caffe's (and XLA's
  # select-and-scatter's) choice among tied maxima.
  first = jnp.zeros(y.shape, jnp.int8 if len(slices) < 128 else jnp.int32)
  for t in reversed(range(len(slices))):
    first = jnp.where(slices[t] == y, t, first)
  zero = np.array(0, dx.dtype)
  dy = functools.reduce(jnp.add, [
      jnp.where(first == t, ds, zero)
      for t, ds in enumerate(_pool_windows(dx, window, stride, 0.0))])
  return y, dy


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


# How CaffeConv computes, all with the same results and parameters:
#   'xla'    one conv_general_dilated with feature_group_count (accelerators);
#   'split'  each group as its own convolution, outputs concatenated (XLA's
#            CPU grouped convolution is several times slower than this);
#   'im2col' shifted slices concatenated on channels times the kernel as one
#            matmul (slower on CPU here; kept for comparison);
#   'split_im2col_grad'  'split', but the kernel gradient of a strided
#            convolution is the im2col matmul (XLA's CPU kernel gradient of a
#            strided convolution is a window-dilated convolution, ~2x slower).
# 'auto' is 'split_im2col_grad' on CPU and 'xla' elsewhere.
GROUP_IMPLS = ("xla", "split", "im2col", "split_im2col_grad")


def conv_xla(x, kernel, stride, padding, groups):
  """The plain form: one `conv_general_dilated` with feature_group_count."""
  return lax.conv_general_dilated(
      x, kernel,
      window_strides=(stride, stride),
      padding=((padding, padding),) * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)


def conv_split(x, kernel, stride, padding, groups):
  """Each group as its own ungrouped convolution, outputs concatenated."""
  if groups == 1:
    return conv_xla(x, kernel, stride, padding, 1)
  xs = jnp.split(x, groups, axis=-1)
  ks = jnp.split(kernel, groups, axis=-1)
  return jnp.concatenate(
      [conv_xla(xi, ki, stride, padding, 1) for xi, ki in zip(xs, ks)],
      axis=-1)


def conv_im2col(x, kernel, stride, padding, groups):
  """im2col: the k*k shifted (strided) slices of the padded input,
  concatenated on channels per group, times the kernel as one matmul batched
  over groups."""
  n, h, w, _ = x.shape
  k, _, cg, out = kernel.shape
  og = out // groups
  oh = caffe_conv_output_size(h, k, stride, padding)
  ow = caffe_conv_output_size(w, k, stride, padding)
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  # [groups, n, h, w, cg]: each group's channels contiguous.
  xg = xp.reshape(xp.shape[:3] + (groups, cg)).transpose(3, 0, 1, 2, 4)
  cols = jnp.concatenate([
      lax.slice(xg, (0, 0, i, j, 0),
                (groups, n, i + (oh - 1) * stride + 1,
                 j + (ow - 1) * stride + 1, cg),
                (1, 1, stride, stride, 1))
      for i in range(k) for j in range(k)], axis=-1)
  cols = cols.reshape(groups, n * oh * ow, k * k * cg)
  # [k, k, cg, groups * og] -> [groups, k * k * cg, og], rows in the patch
  # columns' (i, j, channel) order.
  ker = kernel.reshape(k * k * cg, groups, og).transpose(1, 0, 2)
  y = lax.dot_general(cols, ker, (((2,), (1,)), ((0,), (0,))))
  return y.reshape(groups, n, oh, ow, og).transpose(1, 2, 3, 0, 4).reshape(
      n, oh, ow, out)


def conv_split_im2col_grad(x, kernel, stride, padding, groups):
  """`conv_split`; for a strided convolution, with the im2col form's kernel
  derivative, so reverse mode computes the kernel gradient as one
  patches-transposed-times-output-gradient matmul."""
  if stride == 1:
    return conv_split(x, kernel, stride, padding, groups)
  return _strided_conv_im2col_grad(x, kernel, stride, padding, groups)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _strided_conv_im2col_grad(x, kernel, stride, padding, groups):
  return conv_split(x, kernel, stride, padding, groups)


@functools.partial(_strided_conv_im2col_grad.defjvp, symbolic_zeros=True)
def _strided_conv_im2col_grad_jvp(stride, padding, groups, primals,
                                  tangents):
  x, kernel = primals
  dx, dkernel = tangents
  y = conv_split(x, kernel, stride, padding, groups)
  terms = []
  if not isinstance(dx, SymbolicZero):
    terms.append(conv_split(dx, kernel, stride, padding, groups))
  if not isinstance(dkernel, SymbolicZero):
    # Rematerialised: the patches (k*k/stride^2 times the input) are built
    # in the backward pass, not kept from the forward one.
    terms.append(jax.checkpoint(
        lambda x, dk: conv_im2col(x, dk, stride, padding, groups))(
            x, dkernel))
  dy = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)
  return y, dy


_CONV_FORMS = {"xla": conv_xla, "split": conv_split, "im2col": conv_im2col,
               "split_im2col_grad": conv_split_im2col_grad}


def resolve_group_impl(impl: str) -> str:
  """The form 'auto' stands for on this backend; validates the name."""
  return _resolve_impl("group_impl", impl, GROUP_IMPLS, "split_im2col_grad")


def caffe_conv(x, kernel, stride: int = 1, padding: int = 0, groups: int = 1,
               impl: str = "auto"):
  """Caffe's (grouped) convolution of NHWC `x` with an HWIO `kernel`
  [k, k, in/groups, out], computed by the form `impl` names."""
  return _CONV_FORMS[resolve_group_impl(impl)](x, kernel, stride, padding,
                                               groups)


class CaffeConv(nn.Module):
  """A Caffe convolution: symmetric padding, stride, and optional groups.

  Parameters are stored as Caffe's grouped layout transposed to HWIO:
  kernel [kh, kw, in_features // groups, features], bias [features]; output
  channels of group g are kernel[..., g*features//groups:(g+1)*features//groups].
  `group_impl` only chooses how the convolution runs (see GROUP_IMPLS): the
  outputs and gradients agree to float rounding and the parameters are the
  same. 'auto' is the fastest form measured on CPU ('split_im2col_grad') and
  the plain grouped convolution ('xla') on accelerators.
  """

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  groups: int = 1
  group_impl: str = "auto"
  # False: no bias parameter (convolutions followed by batch norm).
  use_bias: bool = True
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
    y = caffe_conv(x.astype(self.dtype), kernel.astype(self.dtype),
                   self.stride, self.padding, self.groups, self.group_impl)
    if not self.use_bias:
      return y
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      self.param_dtype)
    return y + bias.astype(self.dtype)


class BatchNorm(nn.Module):
  """Batch norm over the last axis with its statistics stored as params.

  Inference (the default): (x - mean) / sqrt(var + eps) * scale + bias, with
  `mean`, `var`, `scale`, `bias` all params, as ported networks hold them
  (Caffe's BatchNorm + Scale pair, PyTorch's running statistics and affine
  weights), so every caller applies an encoder with {"params": ...} alone.
  `use_batch_stats=True` (training from scratch) normalises by the batch's
  own mean and variance instead, leaving `mean`/`var` unused (zero
  gradient), and sows both in the "batch_stats" collection, from which
  `inverter.bn_calibration` sets the stored statistics afterwards.
  """

  eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, use_batch_stats: bool = False
               ) -> jax.Array:
    width = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (width,))
    bias = self.param("bias", nn.initializers.zeros, (width,))
    mean = self.param("mean", nn.initializers.zeros, (width,))
    var = self.param("var", nn.initializers.ones, (width,))
    if use_batch_stats:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axis=axes)
      var = jnp.mean(jnp.square(x32 - mean), axis=axes)
      self.sow("batch_stats", "mean", mean)
      self.sow("batch_stats", "var", var)
    gain = scale * lax.rsqrt(var + self.eps)
    return (x * gain.astype(self.dtype)
            + (bias - mean * gain).astype(self.dtype))


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
  # One kernel holding all four phases: [span, span, cin, 2, 2, cout], built
  # with stacks of taps and zeros (not 25 scatters, whose copies and, in the
  # backward pass, 25 full-size adds cost more than a small convolution).
  def place(kern, axis):
    zero = jnp.zeros_like(lax.index_in_dim(kern, 0, axis, keepdims=False))
    per_parity = []
    for parity in (0, 1):
      at = {d - lo: t for t, d in phases[parity]}
      per_parity.append(jnp.stack(
          [lax.index_in_dim(kern, at[i], axis, keepdims=False) if i in at
           else zero for i in range(span)], axis))
    return jnp.stack(per_parity, axis + 1)
  combined = place(place(kernel, 0), 2)  # [span, 2, span, 2, cin, cout]
  combined = combined.transpose(0, 2, 4, 1, 3, 5)
  h, w = x.shape[1:3]
  y = lax.conv_general_dilated(
      x, combined.reshape(span, span, cin, 4 * cout), window_strides=(1, 1),
      padding=((-lo, hi), (-lo, hi)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.reshape(x.shape[0], h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(x.shape[0], 2 * h, 2 * w, cout)
