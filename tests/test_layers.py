"""Caffe's layer semantics, checked against direct NumPy transcriptions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def numpy_caffe_max_pool_grad(x, cotangent, window, stride):
  """Caffe's max-pool backward: each output's gradient goes to the first
  maximal element of its (clipped) window in row-major order."""
  n, h, w, c = x.shape
  grad = np.zeros_like(x)
  for i in range(cotangent.shape[1]):
    for j in range(cotangent.shape[2]):
      r0, c0 = i * stride, j * stride
      patch = x[:, r0:min(r0 + window, h), c0:min(c0 + window, w)]
      flat = patch.reshape(n, -1, c)
      first = flat.argmax(axis=1)  # argmax returns the first maximum
      rows, cols = np.unravel_index(first, patch.shape[1:3])
      for b in range(n):
        for ch in range(c):
          grad[b, r0 + rows[b, ch], c0 + cols[b, ch], ch] += cotangent[b, i, j,
                                                                        ch]
  return grad


@pytest.mark.parametrize("impl", ["xla", "slices"])
@pytest.mark.parametrize("h,w", [(55, 55), (27, 27), (13, 13), (8, 9), (4, 4)])
def test_max_pool_rounds_up_like_caffe(h, w, impl):
  x = np.random.default_rng(1).normal(size=(2, h, w, 3)).astype(np.float32)
  got = np.asarray(layers.max_pool_ceil(jnp.asarray(x), 3, 2, impl=impl))
  want = numpy_caffe_max_pool(x, 3, 2)
  assert got.shape == want.shape
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("impl", ["xla", "slices"])
@pytest.mark.parametrize("h,w,window,stride", [
    (13, 13, 3, 2), (8, 9, 3, 2), (7, 6, 2, 2), (4, 4, 3, 2), (10, 11, 3, 3)])
def test_max_pool_gradient_goes_to_the_first_maximum_like_caffe(
    h, w, window, stride, impl):
  rng = np.random.default_rng(h * w)
  # After a ReLU: many windows hold only zeros, i.e. tied maxima.
  x = np.maximum(rng.normal(size=(2, h, w, 3)), 0).astype(np.float32)
  out = layers.caffe_pool_output_size
  cotangent = rng.normal(size=(2, out(h, window, stride),
                               out(w, window, stride), 3)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda x: jnp.vdot(
      layers.max_pool_ceil(x, window, stride, impl=impl), cotangent)))
  want = numpy_caffe_max_pool_grad(x, cotangent, window, stride)
  np.testing.assert_allclose(np.asarray(grad(jnp.asarray(x))), want,
                             rtol=1e-6, atol=1e-6)
  # Forward mode is the same linear map: <J t, c> = <t, J^T c>.
  tangent = rng.normal(size=x.shape).astype(np.float32)
  _, jt = jax.jvp(lambda x: layers.max_pool_ceil(x, window, stride, impl=impl),
                  (jnp.asarray(x),), (jnp.asarray(tangent),))
  np.testing.assert_allclose(np.vdot(np.asarray(jt), cotangent),
                             np.vdot(tangent, want), rtol=1e-4)


def test_pool_output_size_keeps_last_partial_window():
  # 8 wide: floor rounding gives 3 windows, Caffe 4 (the last one partial).
  assert layers.caffe_pool_output_size(8, 3, 2) == 4
  assert layers.caffe_pool_output_size(55, 3, 2) == 27
  assert layers.caffe_pool_output_size(13, 3, 2) == 6


# (batch, height, width, in, out, kernel, stride, padding, groups): grouped
# and not, strided and padded, odd and non-square sizes, AlexNet's conv1.
CONV_CASES = [
    (2, 9, 7, 3, 8, 5, 1, 2, 1),
    (2, 7, 9, 8, 6, 3, 1, 1, 2),
    (2, 9, 8, 4, 4, 3, 2, 1, 2),
    (1, 23, 25, 3, 5, 11, 4, 0, 1),
    (2, 10, 11, 6, 9, 5, 3, 2, 3),
    (1, 6, 6, 8, 8, 1, 1, 0, 4),
]


def _conv_case(case):
  n, h, w, cin, cout, k, stride, pad, groups = case
  rng = np.random.default_rng(sum(case))
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  x = normal(n, h, w, cin)
  kernel = normal(k, k, cin // groups, cout)
  cotangent = normal(n, layers.caffe_conv_output_size(h, k, stride, pad),
                     layers.caffe_conv_output_size(w, k, stride, pad), cout)
  return x, kernel, (stride, pad, groups), cotangent


def _value_and_grads(impl, x, kernel, geometry, cotangent):
  """Output, and gradients w.r.t. input and kernel of <output, cotangent>."""
  def f(x, kernel, cotangent):
    y, vjp = jax.vjp(lambda x, k: layers.caffe_conv(x, k, *geometry,
                                                    impl=impl), x, kernel)
    return (y, *vjp(cotangent))
  return jax.jit(f)(x, kernel, cotangent)


@functools.lru_cache
def _plain_conv_reference(case):
  x, kernel, geometry, cotangent = _conv_case(case)
  return _value_and_grads("xla", x, kernel, geometry, cotangent)


@pytest.mark.parametrize("impl", layers.GROUP_IMPLS[1:])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_forms_match_the_plain_grouped_convolution(impl, case):
  x, kernel, geometry, cotangent = _conv_case(case)
  # The definition: one conv_general_dilated with feature_group_count.
  want = _plain_conv_reference(case)
  got = _value_and_grads(impl, x, kernel, geometry, cotangent)
  assert want[0].shape == cotangent.shape
  for name, g, w in zip(("output", "d/dinput", "d/dkernel"), got, want):
    w = np.asarray(w)
    np.testing.assert_allclose(np.asarray(g), w, rtol=0,
                               atol=2e-6 * np.abs(w).max(),
                               err_msg=f"{impl} {name}")


@pytest.mark.parametrize("impl", layers.GROUP_IMPLS[1:])
def test_conv_forms_support_forward_mode_and_kernel_only_gradients(impl):
  # Strided, so 'split_im2col_grad' takes its own derivative path.
  x, kernel, geometry, cotangent = _conv_case(CONV_CASES[2])
  plain = lambda x, k: layers.caffe_conv(x, k, *geometry, impl="xla")
  form = lambda x, k: layers.caffe_conv(x, k, *geometry, impl=impl)
  tangents = (jnp.ones_like(x), kernel[::-1])
  assert_close = lambda got, want: np.testing.assert_allclose(
      np.asarray(got), np.asarray(want), rtol=0,
      atol=2e-6 * np.abs(np.asarray(want)).max())
  assert_close(jax.jvp(form, (x, kernel), tangents)[1],
               jax.jvp(plain, (x, kernel), tangents)[1])
  loss = lambda f: lambda k: jnp.vdot(f(x, k), cotangent)
  assert_close(jax.jit(jax.grad(loss(form)))(kernel),
               jax.grad(loss(plain))(kernel))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_caffe_conv_module_keeps_its_parameter_layout_in_every_form(groups):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 9, 8)),
                  jnp.float32)
  params = layers.CaffeConv(16, 3, stride=2, padding=1, groups=groups,
                            group_impl="xla").init(jax.random.key(1), x)
  assert params["params"]["kernel"].shape == (3, 3, 8 // groups, 16)
  assert params["params"]["bias"].shape == (16,)
  params = jax.tree.map(lambda p: p + 0.5, params)  # a non-zero bias
  want = layers.CaffeConv(16, 3, 2, 1, groups, group_impl="xla").apply(
      params, x)
  assert want.shape == (2, 5, 5, 16)
  for impl in ("auto",) + layers.GROUP_IMPLS:
    conv = layers.CaffeConv(16, 3, 2, 1, groups, group_impl=impl)
    # Every form creates the same parameters from the same key...
    assert jax.tree.map(jnp.shape, conv.init(jax.random.key(1), x)) == (
        jax.tree.map(jnp.shape, params))
    # ...and computes the same function of them.
    np.testing.assert_allclose(conv.apply(params, x), want, rtol=1e-5,
                               atol=1e-5)


def test_unknown_group_impl_is_rejected_with_the_choices():
  conv = layers.CaffeConv(4, 3, group_impl="fast")
  with pytest.raises(ValueError, match="group_impl.*split_im2col_grad"):
    conv.init(jax.random.key(0), jnp.zeros((1, 5, 5, 2)))


def test_group_outputs_only_see_their_input_half():
  conv = layers.CaffeConv(4, 1, groups=2, group_impl="split")
  x = jnp.zeros((1, 2, 2, 4))
  params = conv.init(jax.random.key(0), x)
  params = jax.tree.map(jnp.ones_like, params)
  y = conv.apply(params, x.at[..., :2].set(1.0))  # excite group 0 only
  # Group 0's outputs see 2 ones (+bias 1); group 1's see none (bias only).
  np.testing.assert_allclose(np.asarray(y[0, 0, 0]), [3, 3, 1, 1])


def test_alexnet_taps_and_gradients_agree_across_conv_forms():
  from inverter.models import alexnet
  # A small caffenet with a strided conv1 and grouped conv2/4/5.
  net = lambda impl: alexnet.AlexNet(
      arch="caffenet", input_size=35, conv1_kernel=3, conv1_stride=2,
      conv1_padding=1, widths=(8, 16, 12, 12, 8), fc_width=16, num_classes=5,
      group_impl=impl)
  x = jnp.asarray(np.random.default_rng(0).normal(0, 50, (2, 35, 35, 3)),
                  jnp.float32)
  params = jax.jit(net("xla").init)(jax.random.key(1), x)

  def grads_and_taps(impl):
    def loss(p):
      taps = net(impl).apply(p, x)
      return jnp.sum(taps["fc8"] ** 2), taps
    return jax.jit(jax.grad(loss, has_aux=True))(params)

  def assert_close(got, want, what):
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max(), err_msg=what)

  want_grads, want_taps = grads_and_taps("xla")
  forms = layers.GROUP_IMPLS[1:]
  all_taps = jax.jit(lambda p: [net(impl).apply(p, x) for impl in forms])(
      params)
  for impl, taps in zip(forms, all_taps):
    assert taps.keys() == want_taps.keys()
    for name, want in want_taps.items():
      assert_close(taps[name], want, f"{impl} tap {name}")
  # The default form on this backend, which training uses, also has equal
  # parameter gradients.
  grads, _ = grads_and_taps("auto")
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(want_grads),
                               jax.tree.leaves(grads)):
    assert_close(got, want, f"auto gradient {jax.tree_util.keystr(path)}")


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
