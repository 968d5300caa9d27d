"""Perturbations of feature vectors, as in the paper's robustness study.

Every function takes a batch of features `x` of shape [batch, ...] and treats
each example as one flat vector (all non-batch axes together). They are pure
jax.numpy functions (NumPy arrays work as input), so they run jitted on any
device; the random ones take an explicit `jax.random` key.

  binarize(x)              entries > 0 become one constant, the rest 0; the
                           constant keeps each vector's L2 norm.
  dropout(x, key, rate)    exactly round(rate * dim) random entries become 0,
                           the rest are rescaled to keep the L2 norm.
  gaussian_noise(x, key, snr_db)  adds i.i.d. Gaussian noise whose power is
                           the vector's mean power / 10^(snr_db / 10).
  quantize(x, bits)        2^bits evenly spaced levels between each vector's
                           minimum and maximum (both kept exactly).
  top_k(x, k)              keeps the k largest entries, sets the rest to 0.
  without_top_k(x, k)      sets the k largest entries to 0.

`apply(spec, x, key)` runs one of them from a short text spec ("binarize",
"dropout:0.5", "noise:10", "quantize:4", "top:5", "drop_top:5", "none"),
which is how the analysis configs name them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _flat(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"Features must be batched, [batch, ...]; got shape"
                     f" {tuple(x.shape)}.")
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def l2_norms(x: jax.Array) -> jax.Array:
  """Per-example L2 norm of a [batch, ...] array."""
  return jnp.linalg.norm(_flat(x), axis=1)


def _safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def binarize(x: jax.Array) -> jax.Array:
  """Positive entries -> one constant c, the rest -> 0, with ||out|| = ||x||.

  c = ||x|| / sqrt(number of positive entries). A vector with no positive
  entry becomes all zeros (there is nothing to carry its norm).
  """
  flat = _flat(x)
  on = flat > 0
  count = jnp.sum(on, axis=1, keepdims=True).astype(jnp.float32)
  value = _safe_ratio(jnp.linalg.norm(flat, axis=1, keepdims=True),
                      jnp.sqrt(count))
  return jnp.where(on, value, 0.0).reshape(jnp.shape(x))


def num_dropped(dim: int, rate: float) -> int:
  """How many of `dim` entries `dropout` sets to zero."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"dropout rate must be in [0, 1], got {rate}.")
  return int(round(rate * dim))


def dropout(x: jax.Array, key: jax.Array, rate: float = 0.5) -> jax.Array:
  """Zeroes exactly round(rate * dim) random entries per example and rescales
  the rest so each vector keeps its L2 norm (all zeros if nothing is left)."""
  flat = _flat(x)
  k = num_dropped(flat.shape[1], rate)
  noise = jax.random.uniform(key, flat.shape)
  # Rank of each entry's random number within its row: a uniformly random
  # permutation, so the k lowest ranks are a uniformly random k-subset.
  ranks = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
  kept = jnp.where(ranks < k, 0.0, flat)
  scale = _safe_ratio(jnp.linalg.norm(flat, axis=1, keepdims=True),
                      jnp.linalg.norm(kept, axis=1, keepdims=True))
  return (kept * scale).reshape(jnp.shape(x))


def gaussian_noise(x: jax.Array, key: jax.Array, snr_db: float) -> jax.Array:
  """Adds white Gaussian noise at a signal-to-noise ratio of `snr_db` dB.

  The noise variance is mean(x_i^2) / 10^(snr_db / 10) per example, so the
  expected SNR (signal power over noise power) is exactly `snr_db`.
  """
  flat = _flat(x)
  power = jnp.mean(jnp.square(flat), axis=1, keepdims=True)
  std = jnp.sqrt(power / 10.0 ** (snr_db / 10.0))
  return (flat + std * jax.random.normal(key, flat.shape)).reshape(
      jnp.shape(x))


def quantize(x: jax.Array, bits: int) -> jax.Array:
  """Rounds each vector to 2^bits evenly spaced levels spanning [min, max].

  Both extremes are levels, so zeros of a non-negative vector stay exactly
  zero; the rounding error is at most half a level step. A constant vector is
  returned unchanged.
  """
  if int(bits) != bits or bits < 1:
    raise ValueError(f"quantize needs a whole number of bits >= 1, got {bits}.")
  flat = _flat(x)
  lo = jnp.min(flat, axis=1, keepdims=True)
  hi = jnp.max(flat, axis=1, keepdims=True)
  step = (hi - lo) / (2 ** int(bits) - 1)
  safe = jnp.where(step > 0, step, 1.0)
  levels = jnp.clip(jnp.round((flat - lo) / safe), 0, 2 ** int(bits) - 1)
  out = jnp.where(step > 0, lo + levels * step, flat)
  return out.reshape(jnp.shape(x))


def _top_mask(flat: jax.Array, k: int) -> jax.Array:
  if not 0 < k <= flat.shape[1]:
    raise ValueError(f"k={k} must be between 1 and the feature size"
                     f" {flat.shape[1]}.")
  _, idx = jax.lax.top_k(flat, k)
  rows = jnp.arange(flat.shape[0])[:, None]
  return jnp.zeros(flat.shape, bool).at[rows, idx].set(True)


def top_k(x: jax.Array, k: int = 5) -> jax.Array:
  """Keeps each example's k largest entries (exactly k on ties), zeroes the
  rest."""
  flat = _flat(x)
  return jnp.where(_top_mask(flat, k), flat, 0.0).reshape(jnp.shape(x))


def without_top_k(x: jax.Array, k: int = 5) -> jax.Array:
  """Sets each example's k largest entries to 0, keeps the rest."""
  flat = _flat(x)
  return jnp.where(_top_mask(flat, k), 0.0, flat).reshape(jnp.shape(x))


# --------------------------------------------------------------------------
# Text specs, as the analysis configs write them.
# --------------------------------------------------------------------------

SPEC_HELP = ("'none', 'binarize', 'dropout:RATE' (e.g. dropout:0.5),"
             " 'noise:SNR_DB' (e.g. noise:10), 'quantize:BITS' (e.g."
             " quantize:4), 'top:K', 'drop_top:K'")


def parse(spec: str) -> tuple[str, float | None]:
  """'dropout:0.5' -> ('dropout', 0.5); raises ValueError on a bad spec."""
  name, _, arg = spec.strip().partition(":")
  needs_arg = {"none": False, "binarize": False, "dropout": True,
               "noise": True, "quantize": True, "top": True, "drop_top": True}
  if name not in needs_arg or needs_arg[name] != bool(arg):
    raise ValueError(f"Unknown perturbation {spec!r}; use one of {SPEC_HELP}.")
  if not arg:
    return name, None
  try:
    value = float(arg)
  except ValueError:
    raise ValueError(f"Perturbation {spec!r}: {arg!r} is not a number; use"
                     f" one of {SPEC_HELP}.") from None
  if not math.isfinite(value) or (
      name in ("quantize", "top", "drop_top") and value != int(value)):
    raise ValueError(f"Perturbation {spec!r} needs a finite (for {name}:"
                     f" whole) number; use one of {SPEC_HELP}.")
  return name, value


def is_random(spec: str) -> bool:
  return parse(spec)[0] in ("dropout", "noise")


def describe(spec: str) -> str:
  """A short human label, e.g. 'dropout 50%', 'noise SNR 10 dB'."""
  name, value = parse(spec)
  if name == "dropout":
    return f"dropout {value * 100:g}%"
  if name == "noise":
    return f"noise SNR {value:g} dB"
  if name == "quantize":
    return f"{int(value)}-bit"
  if name == "top":
    return f"top-{int(value)} only"
  if name == "drop_top":
    return f"without top-{int(value)}"
  return name


def apply(spec: str, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
  """Applies the perturbation named by `spec` (see SPEC_HELP)."""
  name, value = parse(spec)
  if name in ("dropout", "noise") and key is None:
    raise ValueError(f"Perturbation {spec!r} is random and needs a key.")
  if name == "none":
    return jnp.asarray(x)
  if name == "binarize":
    return binarize(x)
  if name == "dropout":
    return dropout(x, key, value)
  if name == "noise":
    return gaussian_noise(x, key, value)
  if name == "quantize":
    return quantize(x, int(value))
  if name == "top":
    return top_k(x, int(value))
  return without_top_k(x, int(value))
