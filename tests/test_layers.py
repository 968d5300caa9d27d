"""Caffe's layer semantics, checked against direct NumPy transcriptions."""

import numpy as np
import pytest

import jax.numpy as jnp

from inverter.models import layers


def numpy_caffe_lrn(x, size, alpha, beta, k):
  """Caffe's cross-channel LRN written out loop by loop on NHWC."""
  out = np.empty_like(x)
  channels = x.shape[-1]
  half = (size - 1) // 2
  for c in range(channels):
    lo, hi = max(0, c - half), min(channels, c + size - half)
    scale = k + alpha / size * np.sum(x[..., lo:hi] ** 2, axis=-1)
    out[..., c] = x[..., c] / scale ** beta
  return out


def numpy_caffe_max_pool(x, window, stride):
  """Caffe's max pool: ceil-rounded output, windows clipped at the edge."""
  n, h, w, c = x.shape
  oh = int(np.ceil((h - window) / stride)) + 1
  ow = int(np.ceil((w - window) / stride)) + 1
  out = np.empty((n, oh, ow, c), x.dtype)
  for i in range(oh):
    for j in range(ow):
      patch = x[:, i * stride:min(i * stride + window, h),
                j * stride:min(j * stride + window, w)]
      out[:, i, j] = patch.max(axis=(1, 2))
  return out


@pytest.mark.parametrize("size,channels", [(5, 12), (3, 7), (5, 3)])
def test_lrn_matches_caffe_formula(size, channels):
  rng = np.random.default_rng(0)
  # Activations on AlexNet's scale (hundreds) so the normaliser matters.
  x = rng.normal(0, 300, (2, 4, 5, channels)).astype(np.float32)
  got = np.asarray(layers.local_response_norm(jnp.asarray(x), size=size,
                                              alpha=1e-4, beta=0.75, k=1.0))
  want = numpy_caffe_lrn(x.astype(np.float64), size, 1e-4, 0.75, 1.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert not np.allclose(got, x, rtol=1e-2), "LRN should change the input"


@pytest.mark.parametrize("h,w", [(55, 55), (27, 27), (13, 13), (8, 9), (4, 4)])
def test_max_pool_rounds_up_like_caffe(h, w):
  x = np.random.default_rng(1).normal(size=(2, h, w, 3)).astype(np.float32)
  got = np.asarray(layers.max_pool_ceil(jnp.asarray(x), 3, 2))
  want = numpy_caffe_max_pool(x, 3, 2)
  assert got.shape == want.shape
  np.testing.assert_array_equal(got, want)


def test_pool_output_size_keeps_last_partial_window():
  # 8 wide: floor rounding gives 3 windows, Caffe 4 (the last one partial).
  assert layers.caffe_pool_output_size(8, 3, 2) == 4
  assert layers.caffe_pool_output_size(55, 3, 2) == 27
  assert layers.caffe_pool_output_size(13, 3, 2) == 6


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_conv_implementations_agree(groups):
  import jax
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 8))
  outs = {}
  params = None
  for impl in ("xla", "split"):
    conv = layers.CaffeConv(16, 3, stride=2, padding=1, groups=groups,
                            group_impl=impl)
    params = params or conv.init(jax.random.key(1), x)
    outs[impl] = np.asarray(conv.apply(params, x))
  assert params["params"]["kernel"].shape == (3, 3, 8 // groups, 16)
  assert outs["xla"].shape == (2, 5, 5, 16)
  np.testing.assert_allclose(outs["split"], outs["xla"], rtol=1e-5, atol=1e-5)


def test_group_outputs_only_see_their_input_half():
  import jax
  conv = layers.CaffeConv(4, 1, groups=2, group_impl="split")
  x = jnp.zeros((1, 2, 2, 4))
  params = conv.init(jax.random.key(0), x)
  params = jax.tree.map(jnp.ones_like, params)
  y = conv.apply(params, x.at[..., :2].set(1.0))  # excite group 0 only
  # Group 0's outputs see 2 ones (+bias 1); group 1's see none (bias only).
  np.testing.assert_allclose(np.asarray(y[0, 0, 0]), [3, 3, 1, 1])


def numpy_upconv(x, kernel):
  """Stride-2 up-convolution written out: zero-upsample, pad, correlate."""
  n, h, w, _ = x.shape
  k = kernel.shape[0]
  up = np.zeros((n, 2 * h - 1, 2 * w - 1, x.shape[-1]))
  up[:, ::2, ::2] = x
  up = np.pad(up, ((0, 0), (k // 2, k - k // 2), (k // 2, k - k // 2), (0, 0)))
  out = np.zeros((n, 2 * h, 2 * w, kernel.shape[-1]))
  for i in range(2 * h):
    for j in range(2 * w):
      out[:, i, j] = np.einsum("nhwc,hwco->no", up[:, i:i + k, j:j + k], kernel)
  return out


@pytest.mark.parametrize("kernel_size", [5, 4, 3])
@pytest.mark.parametrize("impl", ["xla", "subpixel"])
def test_upconv_doubles_size_and_matches_its_definition(kernel_size, impl):
  import jax
  rng = np.random.default_rng(kernel_size)
  x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
  conv = layers.UpConv(6, kernel_size, impl=impl)
  params = conv.init(jax.random.key(0), jnp.asarray(x))
  got = np.asarray(conv.apply(params, jnp.asarray(x)))
  kernel = np.asarray(params["params"]["kernel"], np.float64)
  assert got.shape == (2, 8, 10, 6)
  np.testing.assert_allclose(got, numpy_upconv(x.astype(np.float64), kernel),
                             rtol=1e-4, atol=1e-4)
