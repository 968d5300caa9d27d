"""The paper's normalized reconstruction error.

  error = mean_i ||x_i - x_hat_i||_2  /  mean_{i<j} ||x_i - x_j||_2

Both norms are taken over whole images in the network's input space (BGR,
mean-subtracted, 0-255 scale), which gives the same distances as RGB pixels on
the 0-255 scale, at the decoder's output size. The denominator averages over
all pairs of images within each global evaluation batch (batches are fixed by
the data order, not by the device count), so it is cheap at any data size; an
error of 1 means a reconstruction is as far from its input as a random other
image is.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def batch_sums(targets: jax.Array, recons: jax.Array,
               mask: jax.Array) -> dict[str, jax.Array]:
  """Sums that `ErrorAccumulator` needs from one batch; padded rows masked."""
  mask = mask.astype(jnp.float32)
  flat_t = targets.reshape(targets.shape[0], -1).astype(jnp.float32)
  flat_r = recons.reshape(recons.shape[0], -1).astype(jnp.float32)
  errors = jnp.sqrt(jnp.sum(jnp.square(flat_t - flat_r), axis=1))
  sq_norms = jnp.sum(jnp.square(flat_t), axis=1)
  gram = flat_t @ flat_t.T
  pair_sq = jnp.maximum(sq_norms[:, None] + sq_norms[None, :] - 2 * gram, 0.0)
  pair_mask = jnp.triu(mask[:, None] * mask[None, :], k=1)
  return dict(
      error_sum=jnp.sum(errors * mask),
      squared_error_sum=jnp.sum(jnp.square(errors) * mask),
      num_images=jnp.sum(mask),
      pair_distance_sum=jnp.sum(jnp.sqrt(pair_sq) * pair_mask),
      num_pairs=jnp.sum(pair_mask),
      num_pixels=jnp.asarray(flat_t.shape[1], jnp.float32),
  )


@dataclasses.dataclass
class ErrorAccumulator:
  """Adds up `batch_sums` on the host (float64) and reports the error."""

  error_sum: float = 0.0
  squared_error_sum: float = 0.0
  num_images: float = 0.0
  pair_distance_sum: float = 0.0
  num_pairs: float = 0.0
  num_pixels: float = 0.0

  def add(self, sums: dict[str, jax.Array]) -> None:
    for key, value in sums.items():
      if key == "num_pixels":
        self.num_pixels = float(value)
      else:
        setattr(self, key, getattr(self, key) + float(np.asarray(value)))

  def result(self) -> dict[str, float]:
    if self.num_images < 2 or self.num_pairs < 1:
      raise ValueError(
          f"The normalized error needs at least 2 evaluation images in one"
          f" batch; got {int(self.num_images)} images.")
    mean_error = self.error_sum / self.num_images
    mean_pair = self.pair_distance_sum / self.num_pairs
    return dict(
        normalized_error=mean_error / mean_pair,
        mean_l2_error=mean_error,
        mean_pair_distance=mean_pair,
        rmse_per_pixel_value=float(np.sqrt(
            self.squared_error_sum / (self.num_images * self.num_pixels))),
        num_images=int(self.num_images),
        num_pairs=int(self.num_pairs),
    )
