"""PyTorch's pooling semantics in JAX: floor-mode max-pooling and adaptive
average pooling, both on NHWC arrays.

torchvision networks only reproduce their published activations if pooling
rounds and bins exactly as PyTorch does; Caffe's ceil-rounded pooling lives in
`layers.max_pool_ceil`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def max_pool_floor(x: jax.Array, window: int, stride: int,
                   pad: int = 0) -> jax.Array:
  """Max-pooling over H and W, rounding the output size down
  (`nn.MaxPool2d(window, stride, pad)`, ceil_mode=False): a last partial
  window is dropped; padded cells never win (they are -inf)."""
  for size in x.shape[1:3]:
    if size + 2 * pad < window:
      raise ValueError(
          f"max_pool_floor: a {window}x{window} window does not fit a"
          f" {x.shape[1]}x{x.shape[2]} map; the encoder input is too small.")
  # A NumPy (concrete) initial value keeps the reduction differentiable
  # under jit; a traced one is not.
  return lax.reduce_window(
      x, np.array(-np.inf, x.dtype), lax.max,
      window_dimensions=(1, window, window, 1),
      window_strides=(1, stride, stride, 1),
      padding=((0, 0), (pad, pad), (pad, pad), (0, 0)))


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
  """PyTorch's adaptive-pooling bins: bin i covers [floor(i*size/out),
  ceil((i+1)*size/out)). Bins overlap when `size` is not a multiple of
  `out`, and repeat input positions when `size < out`."""
  return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _averaging_matrix(size: int, out: int) -> np.ndarray:
  """[out, size] matrix whose row i averages the inputs of bin i."""
  m = np.zeros((out, size), np.float32)
  for i, (start, end) in enumerate(adaptive_bins(size, out)):
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: jax.Array, out_size: int) -> jax.Array:
  """`nn.AdaptiveAvgPool2d((out_size, out_size))` on an NHWC array.

  A bin's average over a rectangle is the average over its rows of the
  average over its columns, so the pool is two small matrix products (run at
  full float32 precision, since accelerators otherwise round matmul inputs).
  A map already `out_size` wide is returned unchanged, as PyTorch's bins are
  then single pixels.
  """
  _, h, w, _ = x.shape
  if h == out_size and w == out_size:
    return x
  rows = jnp.asarray(_averaging_matrix(h, out_size), x.dtype)
  cols = jnp.asarray(_averaging_matrix(w, out_size), x.dtype)
  return jnp.einsum("ih,nhwc,jw->nijc", rows, x, cols,
                    precision=lax.Precision.HIGHEST)
