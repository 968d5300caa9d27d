"""Weight layout conversions from PyTorch/Caffe blobs to our Flax params.

Both frameworks store conv kernels as [out, in, h, w] and fully connected
weights as [out, in], with the first fc layer after a conv stack reading the
map flattened in C, H, W order. Our encoders use HWIO kernels, [in, out]
dense kernels, and flatten maps in H, W, C order (NHWC), so the first fc
layer's rows are permuted.
"""

from __future__ import annotations

import math

import numpy as np

from inverter.port.common import PortError


def conv_kernel(weight: np.ndarray, name: str) -> np.ndarray:
  """[out, in, h, w] -> [h, w, in, out], float32."""
  if weight.ndim != 4:
    raise PortError(f"{name}: expected a 4-D conv weight, got shape"
                    f" {weight.shape}.")
  return np.ascontiguousarray(
      np.transpose(weight, (2, 3, 1, 0)).astype(np.float32))


def dense_kernel(weight: np.ndarray, name: str) -> np.ndarray:
  """[out, in] -> [in, out], float32."""
  if weight.ndim != 2:
    raise PortError(f"{name}: expected a 2-D fc weight, got shape"
                    f" {weight.shape}.")
  return np.ascontiguousarray(weight.T.astype(np.float32))


def map_side(in_features: int, channels: int, name: str) -> int:
  """The side of the square C-channel map an fc layer of `in_features`
  inputs reads (e.g. 25088 / 512 -> 7)."""
  side = math.isqrt(in_features // channels) if channels else 0
  if channels <= 0 or side * side * channels != in_features:
    raise PortError(
        f"{name} has {in_features} inputs, which is not a square map of"
        f" {channels} channels (the last conv layer's width).")
  return side


def first_dense_kernel(weight: np.ndarray, channels: int,
                       name: str) -> tuple[np.ndarray, int]:
  """The fc layer reading a C, H, W-flattened square map -> [H*W*C, out]
  with rows in H, W, C order; also returns the map side."""
  if weight.ndim != 2:
    raise PortError(f"{name}: expected a 2-D fc weight, got shape"
                    f" {weight.shape}.")
  out, in_features = weight.shape
  side = map_side(in_features, channels, name)
  hwc = weight.reshape(out, channels, side, side).transpose(2, 3, 1, 0)
  return (np.ascontiguousarray(hwc.reshape(side * side * channels, out)
                               .astype(np.float32)), side)


def bias(value: np.ndarray, width: int, name: str) -> np.ndarray:
  value = np.asarray(value).reshape(-1)
  if value.shape != (width,):
    raise PortError(f"{name}: bias has {value.size} values for {width}"
                    " outputs.")
  return value.astype(np.float32)
