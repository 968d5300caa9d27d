"""What knows an image's class and nothing else: mean images per class.

The paper's headline claim is that colours and rough contours of *an image*
survive up to fc8 and the class probabilities. A reconstruction could look
right merely by drawing what is typical of the class, so the
`color_position` study compares it with two predictions that know nothing
of the image beyond its class: the data set's mean image, and the mean image
of the image's true class. Both are computed on the training split with
evaluation preprocessing, at the decoder's output size, in the error's space.
For L2 errors these are the best class-only predictions: of the blurred image
the class mean blurred (the blur is linear), of the edge map the class mean
of edge maps (which is why edge maps are averaged, not taken of the mean).
"""

from __future__ import annotations

import dataclasses
import json

import ml_collections
import numpy as np
from absl import logging

from inverter import data as data_lib
from inverter.analysis import common, measures


@dataclasses.dataclass
class References:
  """Per-class sums of target images and of their edge maps."""
  image_sums: np.ndarray  # [C, S, S, 3] float64
  edge_sums: np.ndarray  # [C, e, e, 1] float64
  counts: np.ndarray  # [C] images per class

  def class_means(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean image, mean edge map) of each label's class."""
    counts = np.maximum(self.counts[labels], 1)
    images = self.image_sums[labels] / counts[:, None, None, None]
    edges = self.edge_sums[labels] / counts[:, None, None, None]
    return images.astype(np.float32), edges.astype(np.float32)

  def overall_means(self) -> tuple[np.ndarray, np.ndarray]:
    """(mean image, mean edge map) of the whole data set, [1, ...] each."""
    total = max(int(self.counts.sum()), 1)
    return ((self.image_sums.sum(0, keepdims=True) / total).astype(np.float32),
            (self.edge_sums.sum(0, keepdims=True) / total).astype(np.float32))


# Computed references by (data config, output size, edge size): every
# inverter of a study with the same preprocessing shares them.
_CACHE: dict[str, References] = {}


def has_labels(data: ml_collections.ConfigDict) -> bool:
  try:
    data_lib.label_names(data)
  except ValueError:
    return False
  return True


def compute(inv: common.Inverter, config: ml_collections.ConfigDict,
            edge_size: int) -> References:
  """The references for `inv`'s study images, from their source's training
  split (config.color_position.reference_images of it; -1 = all)."""
  data = common.data_config(inv, config)
  data.eval_split = data.train_split
  data.eval_num_images = int(config.color_position.reference_images)
  key = json.dumps([data.to_dict(), inv.output_size, edge_size],
                   sort_keys=True, default=str)
  if key in _CACHE:
    return _CACHE[key]
  num_classes = len(data_lib.label_names(data))
  size = inv.output_size
  refs = References(np.zeros((num_classes, size, size, 3)),
                    np.zeros((num_classes, edge_size, edge_size, 1)),
                    np.zeros(num_classes, np.int64))
  total = data_lib.eval_num_batches(data, local_batch_size=config.batch_size)
  progress = common.Progress("class references", total)
  for batch in data_lib.eval_iterator(data, local_batch_size=config.batch_size,
                                      with_labels=True):
    mask = np.asarray(batch["mask"], bool)
    labels = np.asarray(batch["label"])[mask]
    targets = inv.target(np.asarray(batch["image"])[mask])
    np.add.at(refs.image_sums, labels, targets)
    np.add.at(refs.edge_sums, labels, measures.edge_map(targets, edge_size))
    np.add.at(refs.counts, labels, 1)
    progress.update(f"{data.source} {data.eval_split}")
  logging.info("Class references from %d %s images, %d classes (%d without"
               " images).", int(refs.counts.sum()), data.eval_split,
               num_classes, int((refs.counts == 0).sum()))
  _CACHE[key] = refs
  return refs
