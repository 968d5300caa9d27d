"""What an inverter sees of the encoder's features: `config.feature_transform`.

Applied to the tapped features before the decoder, at training, evaluation and
restore time alike, so an inverter can be trained on a reduced code:
  ''      the features as they are (the default);
  'topK'  each example keeps its K largest entries, the rest become 0
          (e.g. 'top5', which configs/fc8_top5.py uses to ask how much of the
          image the five strongest class scores alone determine).
"""

from __future__ import annotations

import re

import jax

from inverter import perturbations

_TOP = re.compile(r"top([1-9][0-9]*)")


def check(name: str) -> None:
  """Raises ValueError for an unknown transform name."""
  if name and not _TOP.fullmatch(name):
    raise ValueError(
        f"Unknown feature_transform {name!r} (config field"
        " feature_transform); use '' (none) or 'topK' such as 'top5'.")


def apply(name: str, features: jax.Array) -> jax.Array:
  """The features as the decoder of a `feature_transform=name` run sees them."""
  check(name)
  if not name:
    return features
  k = int(_TOP.fullmatch(name).group(1))
  return perturbations.top_k(features, k).astype(features.dtype)


def describe(name: str) -> str:
  check(name)
  return "all features" if not name else f"top-{name[3:]} features only"
