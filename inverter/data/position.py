"""Where the training input stream stands, saved with every checkpoint.

Exact resume needs more than parameters and step: the input pipeline must
continue with the example after the last one trained on. Every training
batch carries each example's index in its process's stream
(`data_lib.POSITION`); the checkpoint stores, for every process, the
index to start from next (`payload`), and a restart asks `start` where this
process begins. Restarting with the same number of processes continues every
stream exactly. With another process count (e.g. a pod checkpoint continued
in Colab), folder and builtin streams still continue exactly, as they are
shares of one global stream; TFDS shares are re-cut, so training restarts at
the beginning of the epoch the slowest process was in (logged).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from inverter import data as data_lib

VERSION = 1


def next_start(batch: dict[str, np.ndarray]) -> int:
  """The stream index after the last example of a training batch."""
  return int(batch[data_lib.POSITION][-1]) + 1


def payload(data: ml_collections.ConfigDict, *, seed: int, step: int,
            global_batch_size: int, local_next: int) -> dict[str, Any]:
  """The JSON saved with a checkpoint; a collective, every process calls it.

  `local_next` is this process's `next_start` of its last batch.
  """
  gathered = multihost_utils.process_allgather(
      np.asarray([local_next], np.int64))
  return dict(version=VERSION, source=data.source,
              train_split=data.train_split, seed=int(seed), step=int(step),
              global_batch_size=int(global_batch_size),
              process_count=jax.process_count(),
              next=[int(k) for k in np.ravel(gathered)])


def _same_stream(saved: dict[str, Any], data: ml_collections.ConfigDict,
                 seed: int) -> list[str]:
  """What differs between the saved stream and this run's."""
  mine = dict(source=data.source, train_split=data.train_split,
              seed=int(seed))
  return [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}"
          for k, v in mine.items() if saved.get(k) != v]


def start(saved: dict[str, Any] | None, data: ml_collections.ConfigDict, *,
          seed: int, step: int, global_batch_size: int,
          process_index: int | None = None,
          process_count: int | None = None) -> int:
  """The stream index at which this process continues after `step`."""
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  # Without drops of undecodable images, every stream is here after `step`.
  nominal = step * global_batch_size // count
  if saved is None:
    if step:
      logging.warning(
          "The checkpoint at step %d holds no input position (written before"
          " exact resume existed); continuing at stream index %d.", step,
          nominal)
    return nominal
  differences = _same_stream(saved, data, seed)
  if differences:
    logging.warning("The input stream changed since the checkpoint (%s);"
                    " continuing the new one at index %d.",
                    "; ".join(differences), nominal)
    return nominal
  if saved["process_count"] == count:
    return int(saved["next"][index])
  old_count, nexts = saved["process_count"], saved["next"]
  if data_lib.source_kind(data) != "tfds":
    # Shares of one global stream: continue after the earliest example not
    # yet read by every process.
    first_unread = min(p + old_count * k for p, k in enumerate(nexts))
    return max(0, math.ceil((first_unread - index) / count))
  epoch = min(
      k // data_lib.train_share_size(data, process_index=p,
                                     process_count=old_count)
      for p, k in enumerate(nexts))
  logging.warning(
      "The checkpoint was written by %d processes and this run has %d; TFDS"
      " shares differ, so training restarts at the beginning of epoch %d.",
      old_count, count, epoch)
  return epoch * data_lib.train_share_size(
      data, process_index=index, process_count=count)
