"""Batch-norm statistics for a network trained from scratch ("precise BN").

While `inverter.classify` trains a network with batch norm, each layer
normalises by its batch's own statistics (`layers.BatchNorm(...,
use_batch_stats=True)`) and the stored `mean`/`var` params stay unused.
Before the network is evaluated, exported or inverted they are set here:
each layer's statistics are averaged over a fixed set of training images,
read in the evaluation order with centre crops, so the result does not
depend on where training stopped or resumed. Averaging batch means and
variances this way is the "precise BN" of Wu & Johnson ("Rethinking 'Batch'
in BatchNorm", 2021), which they found better than the running averages a
training loop keeps.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import flax
import jax
import numpy as np
from absl import logging


def has_batch_norm(params: Any) -> bool:
  """Whether `params` hold batch-norm statistics (a `var` leaf)."""
  return any(jax.tree_util.keystr(path).endswith("['var']")
             for path, _ in jax.tree_util.tree_leaves_with_path(params))


def statistics_fn(model: Any, encoder_input: Callable, until: str):
  """jit((params, images) -> {module path: {'mean', 'var'}}): every batch
  norm's batch statistics on `images` (the forward pass stops at `until`,
  which must come after the last batch norm)."""

  def stats(params, images):
    _, state = model.apply({"params": params}, encoder_input(images),
                           train=True, until=until, mutable=["batch_stats"])
    return jax.tree.map(lambda values: values[0], state["batch_stats"],
                        is_leaf=lambda x: isinstance(x, tuple))

  return jax.jit(stats)


def calibrate(params: Any, batches: Iterable[np.ndarray],
              stats: Callable[[Any, np.ndarray], Any]) -> Any:
  """`params` with every batch norm's `mean`/`var` replaced by the average
  of its batch statistics over `batches` (images, whole batches only)."""
  total, count = None, 0
  for images in batches:
    got = jax.device_get(stats(params, images))
    total = got if total is None else jax.tree.map(np.add, total, got)
    count += 1
  if not count:
    raise ValueError("Batch-norm calibration needs at least one batch.")
  average = jax.tree.map(lambda v: np.asarray(v, np.float32) / count, total)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  for path, value in flax.traverse_util.flatten_dict(average).items():
    flat[path] = value.astype(np.asarray(flat[path]).dtype)
  logging.info("Batch-norm statistics of %d layers set from %d batches.",
               len(flax.traverse_util.flatten_dict(average)) // 2, count)
  return flax.traverse_util.unflatten_dict(flat)
