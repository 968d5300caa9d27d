"""What every encoder's forward pass shares: the input check and running a
list of named stages, keeping each stage's output as a tap."""

from __future__ import annotations

from typing import Callable, Sequence

import jax

Stage = tuple[str, Callable[[jax.Array], jax.Array]]


def check_input(arch: str, x: jax.Array, input_size: int) -> None:
  """Refuses anything but a batch of `input_size` square RGB images."""
  if x.ndim != 4 or x.shape[1:] != (input_size, input_size, 3):
    raise ValueError(
        f"{arch} expects images of shape [batch, {input_size}, {input_size},"
        f" 3] (encoder.input_size={input_size}), got {tuple(x.shape)}.")


def run(stages: Sequence[Stage], x: jax.Array,
        until: str | None = None) -> dict[str, jax.Array]:
  """{stage name: output} for the stages up to and including `until`."""
  taps: dict[str, jax.Array] = {}
  h = x
  for name, op in stages:
    h = taps[name] = op(h)
    if name == until:
      break
  return taps
