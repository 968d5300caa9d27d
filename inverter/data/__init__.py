"""Input pipelines that feed Caffe-preprocessed images to the inversion models.

The public surface of the data package; the modules behind it each have one
job: `caffe_preprocessing` (Caffe's preprocessing and its inverse),
`stream` (positions, seeds, shares, rebatching), and one module per source:
`tfds_source`, `folder_source`, `builtin_source`. `position` is the stream
position saved with every checkpoint.

Every source yields batches of ``{'image': float32 [batch, crop, crop, 3]}``
in Caffe's convention: **BGR channel order, 0-255 scale, mean subtracted**.
That is what the AlexNet weights of the original Caffe model expect, so the
same arrays can go straight into the (frozen) encoder; `to_rgb_uint8` undoes
the convention for display. Asked ``with_labels=True`` (to train an encoder as
a classifier), batches also hold ``'label'``: int32 [batch] class indices, in
the order of `label_names`.

Three kinds of ``data.source`` are understood:

* a TFDS name (``'imagenet2012'``, ``'cifar10'``, ``'imagenette/320px-v2'``,
  ...): read from a prepared TFDS ``data_dir``; any dataset with an ``image``
  feature works, all other features are dropped (``label`` is kept when
  labels are asked for).
* ``'folder:PATH'``: image files on disk (or any `tf.io.gfile` path). Either
  the TFDS ImageFolder layout ``PATH/<split>/<label>/<image>`` with the split
  folders named by ``data.train_split`` / ``data.eval_split``, or a flat folder
  without split folders (images directly in ``PATH`` or in class subfolders):
  then the sorted file list is split deterministically, every 10th file
  (indices 0, 10, 20, ...) is the eval split and the rest the train split.
  Labels exist only in the ImageFolder layout: the index of ``<label>`` among
  the sorted class folders of the train split (for CIFAR-10 folders that is
  TFDS ``cifar10``'s label order).
* ``'builtin:skimage'``: the natural photographs that ship inside the
  installed scikit-image package, for offline demos. Training examples are an
  endless stream of random square crops of the training photos; evaluation
  uses 15 fixed crops of three held-out photos (see `builtin_source`).
  It has no labels.

Determinism and exact resume: the training stream of each process is a
fixed function of (seed, process_index, process_count), and every batch says
where in it its examples sit (``'position'``: int64 [B], the index of each
example in this process's stream). `train_iterator(..., start=k)` starts the
same stream at index k, so a trainer that checkpoints the position after its
last batch resumes without seeing any example twice or skipping one:

* folders and ``builtin:skimage`` are random-access: example k of process p
  is example ``g = p + process_count * k`` of one global stream (epoch
  ``g // N`` is a stateless pseudorandom permutation of the N files), so
  starting anywhere costs nothing, and the union of the processes' batches
  is the same whatever the process count;
* TFDS (TFRecord files cannot be read at an index) reads this process's even
  share of the split, one seeded shuffle per epoch; starting at k replays
  the epoch's shuffle up to k without decoding (a resume reads up to one
  epoch of this process's records once).

Every random augmentation uses stateless random ops seeded by (seed, ``p +
process_count * k``), so parallel maps cannot change the result.

Multi-host: every process reads only its share of each split (TFDS even
splits, every process_count-th example of the global stream for folders).
Evaluation pads every process to the same number of batches so that
collective ops line up.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import ml_collections
import tensorflow as tf

from inverter.data import builtin_source, folder_source, stream, tfds_source
from inverter.data.builtin_source import BUILTIN_PREFIX
from inverter.data.caffe_preprocessing import caffe_preprocess, to_rgb_uint8, warp
from inverter.data.folder_source import (FOLDER_PREFIX, IMAGE_EXTENSIONS,
                                         skipped_images)
from inverter.data.stream import POSITION, Batch

__all__ = [
    "BUILTIN_PREFIX", "FOLDER_PREFIX", "IMAGE_EXTENSIONS", "POSITION",
    "Batch", "caffe_preprocess", "check_source", "eval_iterator",
    "eval_num_batches", "eval_num_examples", "label_names", "skipped_images",
    "source_kind", "to_rgb_uint8", "train_iterator", "train_share_size",
    "warp",
]


def source_kind(data: ml_collections.ConfigDict) -> str:
  """'folder', 'builtin' or 'tfds' (anything else is a TFDS name)."""
  if data.source.startswith(FOLDER_PREFIX):
    return "folder"
  if data.source.startswith(BUILTIN_PREFIX):
    return "builtin"
  return "tfds"


def _mean_file_problems(data: ml_collections.ConfigDict) -> list[str]:
  """A missing mean file would only surface when the pipeline is traced."""
  if data.mean_file and not tf.io.gfile.exists(data.mean_file):
    return [f"data.mean_file {data.mean_file} does not exist."]
  return []


def check_source(data: ml_collections.ConfigDict, *,
                 with_labels: bool = False) -> list[str]:
  """Human-readable problems that would stop training; empty when usable.

  Reads no examples and needs no network for local paths: TFDS builders are
  made with ``try_gcs=False`` (and TFDS 4.9 keeps its GCS lookups disabled by
  default); the TFDS part is bounded by a timeout in case a gs:// data_dir
  hangs. Under `tfds.testing.mock_data` a TFDS source counts as usable.
  ``with_labels`` also requires labels (see `label_names`).
  """
  problems = _mean_file_problems(data)
  kind = source_kind(data)
  if kind == "folder":
    problems += folder_source.source_problems(data)
  elif kind == "builtin":
    problems += builtin_source.source_problems(data)
  else:
    problems += tfds_source.source_problems(data)
  if with_labels and not problems:
    try:
      label_names(data)
    except ValueError as e:
      problems.append(str(e))
  return problems


def label_names(data: ml_collections.ConfigDict) -> list[str]:
  """The class names of a labelled source; label i means names[i].

  TFDS: the names of the 'label' feature. ImageFolder layout: the sorted
  class folder names of the train split (so CIFAR-10 folders get TFDS
  cifar10's order). Raises ValueError for sources without labels (flat
  folders, builtin:skimage, TFDS datasets without a 'label' feature).
  """
  kind = source_kind(data)
  if kind == "folder":
    return folder_source.label_names(data)
  if kind == "builtin":
    raise builtin_source.no_labels_error(data)
  return tfds_source.label_names(data)


def train_share_size(data: ml_collections.ConfigDict, *,
                     process_index: int = 0, process_count: int = 1) -> int:
  """Examples in one epoch of this process's TFDS training stream (its even
  share of the train split). Folder and builtin streams are global."""
  if source_kind(data) != "tfds":
    raise ValueError(f"{data.source} is not a TFDS source.")
  return tfds_source.train_share_size(data, process_index=process_index,
                                      process_count=process_count)


def train_iterator(data: ml_collections.ConfigDict,
                   *,
                   local_batch_size: int,
                   seed: int,
                   process_index: int = 0,
                   process_count: int = 1,
                   with_labels: bool = False,
                   start: int = 0) -> Iterator[Batch]:
  """Endless training batches ``{'image': float32 [B, crop, crop, 3],
  'position': int64 [B]}``.

  BGR, mean-subtracted (see `caffe_preprocess`). A new order every epoch,
  deterministic for a given (seed, process_index, process_count).
  ``'position'`` is each example's index in this process's stream; pass
  ``start=batch['position'][-1] + 1`` of the last batch used to continue
  exactly after it (see the module docstring). With ``with_labels``,
  batches also hold ``'label'``: int32 [B] (ValueError for a source without
  labels).
  """
  kind = source_kind(data)
  common = dict(seed=seed, process_index=process_index,
                process_count=process_count, start=start,
                with_labels=with_labels)
  if kind == "tfds":
    segments = tfds_source.train_epochs(data, **common)
  else:
    readers = {"folder": folder_source.train_images,
               "builtin": builtin_source.train_images}
    segments = iter([readers[kind](data, **common)])
  base_seed = stream.stream_seed(seed, 0, stream.PREPROCESS_STREAM)

  def preprocess(position: tf.Tensor, image: tf.Tensor,
                 *label: tf.Tensor) -> dict[str, tf.Tensor]:
    example_seed = tf.random.experimental.stateless_fold_in(
        base_seed, stream.global_index(position, process_index, process_count))
    out = {"image": caffe_preprocess(image, data=data, train=True,
                                     seed=example_seed),
           stream.POSITION: position}
    if label:
      out["label"] = label[0]
    return out

  def batches(segment: tf.data.Dataset) -> Iterator[Batch]:
    ds = segment.map(preprocess, num_parallel_calls=stream.parallelism(data))
    return stream.finalize(ds.batch(local_batch_size), data)

  return stream.rebatch((batches(segment) for segment in segments),
                        local_batch_size)


def eval_num_examples(data: ml_collections.ConfigDict) -> int:
  """Number of eval examples over all processes (after eval_num_images).

  Counts files/records; a folder file found undecodable later is skipped,
  so the number of True mask entries can be smaller.
  """
  kind = source_kind(data)
  if kind == "tfds":
    return tfds_source.eval_num_examples(data)
  if kind == "folder":
    return folder_source.eval_num_examples(data)
  return builtin_source.eval_num_examples(data)


def eval_num_batches(data: ml_collections.ConfigDict, *,
                     local_batch_size: int, process_count: int = 1) -> int:
  """Batches every process yields from `eval_iterator` (same for all).

  The largest process share has ceil(examples / process_count) examples,
  both for TFDS even splits and for ``files[index::count]``.
  """
  largest_share = math.ceil(eval_num_examples(data) / process_count)
  return math.ceil(largest_share / local_batch_size)


def eval_iterator(data: ml_collections.ConfigDict,
                  *,
                  local_batch_size: int,
                  process_index: int = 0,
                  process_count: int = 1,
                  with_labels: bool = False) -> Iterator[Batch]:
  """Finite eval batches ``{'image': [B, crop, crop, 3], 'mask': bool [B]}``.

  Centre crops, no mirroring, one fixed order. Batches are padded with zero
  images whose mask is False, and every process yields exactly
  `eval_num_batches` batches (whole padding batches where its share is
  shorter), so a multi-host eval loop stays in lockstep. With
  ``with_labels``, batches also hold ``'label'``: int32 [B] (0 for padding).
  """
  readers = {"tfds": tfds_source.eval_images,
             "folder": folder_source.eval_images,
             "builtin": builtin_source.eval_images}
  images = readers[source_kind(data)](
      data, process_index=process_index, process_count=process_count,
      with_labels=with_labels)
  num_batches = eval_num_batches(data, local_batch_size=local_batch_size,
                                 process_count=process_count)

  def preprocess(image: tf.Tensor, *label: tf.Tensor) -> dict[str, tf.Tensor]:
    out = {"image": caffe_preprocess(image, data=data, train=False),
           "mask": tf.constant(True)}
    if label:
      out["label"] = label[0]
    return out

  crop = data.crop_size
  pad_example = {"image": tf.zeros([crop, crop, 3], tf.float32),
                 "mask": tf.constant(False)}
  if with_labels:
    pad_example["label"] = tf.constant(0, tf.int32)
  padding = tf.data.Dataset.from_tensors(pad_example).repeat()
  ds = images.map(preprocess, num_parallel_calls=stream.parallelism(data))
  ds = ds.concatenate(padding).take(num_batches * local_batch_size)
  return stream.finalize(ds.batch(local_batch_size), data)
