"""Coarse measures of images: what is left of colour and layout (a strong
blur) and of rough contours (an edge map), for the `color_position` study.

Both take images [N, H, W, 3] in the error's space (BGR, mean-subtracted,
0-255 scale) and return smaller images in which the paper's normalized error
can be taken as usual.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# Sobel kernels (d/dx, d/dy), for an image [N, H, W, 1] in HWIO layout.
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
_SOBEL = np.stack([_SOBEL_X, _SOBEL_X.T], axis=-1)[:, :, None, :]


@functools.partial(jax.jit, static_argnums=1)
def _resize(images: jax.Array, size: int) -> jax.Array:
  shape = (images.shape[0], size, size, images.shape[3])
  return jax.image.resize(images, shape, "linear", antialias=True)


def blur(images: np.ndarray, size: int) -> np.ndarray:
  """[N, H, W, 3] -> [N, size, size, 3], antialiased (area-like)
  downsampling: colour and layout without detail. Linear, so the blur of a
  mean image is the mean of the blurred images."""
  return np.asarray(_resize(jnp.asarray(images, jnp.float32), size))


@functools.partial(jax.jit, static_argnums=1)
def _edge_map(images: jax.Array, size: int) -> jax.Array:
  grey = _resize(images.mean(axis=-1, keepdims=True), size)
  padded = jnp.pad(grey, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  gradients = jax.lax.conv_general_dilated(
      padded, jnp.asarray(_SOBEL), (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.sqrt(jnp.sum(jnp.square(gradients), axis=-1, keepdims=True))


def edge_map(images: np.ndarray, size: int) -> np.ndarray:
  """[N, H, W, 3] -> [N, size, size, 1]: the Sobel gradient magnitude of the
  grey image downsampled to size x size, i.e. where its rough contours are
  (not their colours; constant offsets do not matter)."""
  return np.asarray(_edge_map(jnp.asarray(images, jnp.float32), size))
