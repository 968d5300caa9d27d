"""Source: image files in a folder (`data.source` is ``folder:PATH``).

Either the TFDS ImageFolder layout ``PATH/<split>/<label>/<image>``, with the
split folders named by ``data.train_split`` / ``data.eval_split``, or a flat
folder (images directly in ``PATH`` or in class subfolders), whose sorted
file list is split deterministically: every 10th file (0, 10, 20, ...) is the
eval split, the rest the train split. Labels exist only in the ImageFolder
layout: the index of ``<label>`` among the sorted class folders of the train
split (for CIFAR-10 folders, TFDS ``cifar10``'s order). Files are decoded by
PIL; an undecodable one is skipped, warned about and counted once.

Training reads one global stream at any index: epoch ``g // N`` is a
stateless pseudorandom permutation of the N files, so a resume costs nothing
and the union of the processes' batches does not depend on their number.
Evaluation reads the files in one fixed mixed order (`stream.mixed_order`).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from inverter.data import stream

FOLDER_PREFIX = "folder:"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Folder names that mark the ImageFolder (split folders) layout.
_COMMON_SPLIT_NAMES = frozenset({"train", "test", "val", "validation"})
# In a flat folder, files 0, 10, 20, ... of the sorted list are held out.
FLAT_FOLDER_EVAL_EVERY = 10


class _SkippedFiles:
  """Thread-safe set of image files that could not be decoded."""

  def __init__(self) -> None:
    self._lock = threading.Lock()
    self._paths: set[str] = set()

  def add(self, path: str) -> bool:
    """Records path; True the first time it is seen."""
    with self._lock:
      is_new = path not in self._paths
      self._paths.add(path)
      return is_new

  def count(self) -> int:
    """Number of distinct files recorded."""
    with self._lock:
      return len(self._paths)


_SKIPPED = _SkippedFiles()


def skipped_images() -> int:
  """Number of distinct image files skipped as undecodable in this process.

  A corrupt file is read again every epoch but counted (and warned about)
  once. Only the folder source counts; TFDS data is validated when prepared.
  """
  return _SKIPPED.count()


def _is_image_file(name: str) -> bool:
  """Whether the file name has an image extension (any letter case)."""
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(root: str) -> list[str]:
  """All image files under root, at any depth, sorted."""
  found = []
  for dirpath, _, filenames in tf.io.gfile.walk(root):
    found.extend(os.path.join(dirpath, name) for name in filenames
                 if _is_image_file(name))
  return sorted(found)


def _subfolders(root: str) -> set[str]:
  """Names of the folders directly inside root."""
  return {name.rstrip("/") for name in tf.io.gfile.listdir(root)
          if tf.io.gfile.isdir(os.path.join(root, name))}


def _root(data: ml_collections.ConfigDict) -> str:
  """PATH of a folder:PATH source."""
  return data.source[len(FOLDER_PREFIX):]


def _split_files(data: ml_collections.ConfigDict, role: str) -> list[str]:
  """Sorted image files of the train or eval split of a folder source.

  Raises:
    ValueError: the folder is missing, or it has split folders but not the
      one the config names (rather than guessing which one was meant).
  """
  root = _root(data)
  if not tf.io.gfile.isdir(root):
    raise ValueError(f"Image folder {root} does not exist.")
  subfolders = _subfolders(root)
  wanted = data.train_split if role == "train" else data.eval_split
  split_folders = subfolders & (
      _COMMON_SPLIT_NAMES | {data.train_split, data.eval_split})
  if not split_folders:
    files = _list_images(root)
    if role == "eval":
      return files[::FLAT_FOLDER_EVAL_EVERY]
    return [f for i, f in enumerate(files) if i % FLAT_FOLDER_EVAL_EVERY]
  if wanted not in subfolders:
    raise ValueError(
        f"Image folder {root} has split folders {sorted(split_folders)} but"
        f" no {wanted!r} folder for data.{role}_split; set data.{role}_split"
        " to one of them.")
  return _list_images(os.path.join(root, wanted))


def _read_rgb(path: bytes) -> np.ndarray:
  """Decodes any PIL-readable file to RGB uint8; empty [0, 0, 3] on failure.

  PIL sniffs the format from the content (a PNG named .JPEG is fine) and
  converts grayscale, palette, CMYK and RGBA (alpha dropped) to RGB.
  """
  name = path.decode()
  try:
    with tf.io.gfile.GFile(name, "rb") as f:
      encoded = f.read()
    with Image.open(io.BytesIO(encoded)) as image:
      return np.asarray(image.convert("RGB"), np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    # Corrupt files raise many types (OSError, SyntaxError, ValueError, ...);
    # one bad file must not stop training.
    if _SKIPPED.add(name):
      logging.warning("Skipping undecodable image %s: %s", name, e)
    return np.zeros((0, 0, 3), np.uint8)


def _decode_files(paths: tf.data.Dataset,
                  data: ml_collections.ConfigDict,
                  image_at: int = 0) -> tf.data.Dataset:
  """Decodes files in parallel with PIL, dropping the undecodable ones.

  Elements may be tuples (e.g. (path, label) or (position, path, label))
  whose entry `image_at` is the path; the others pass through unchanged.
  """
  def decode(*element: tf.Tensor) -> Any:
    image = tf.numpy_function(_read_rgb, [element[image_at]], tf.uint8,
                              stateful=False)
    image = tf.ensure_shape(image, [None, None, 3])
    if len(element) == 1:
      return image
    return (*element[:image_at], image, *element[image_at + 1:])
  images = paths.map(decode, num_parallel_calls=stream.parallelism(data))
  return images.filter(lambda *element: tf.size(element[image_at]) > 0)


def _paths_dataset(paths: Sequence[str],
                   labels: Sequence[int] | None = None) -> tf.data.Dataset:
  """A dataset of file names, or of (file name, int32 label) pairs when
  labels are given (typed, so that an empty list works too)."""
  names = tf.constant(paths, tf.string)
  if labels is None:
    return tf.data.Dataset.from_tensor_slices(names)
  return tf.data.Dataset.from_tensor_slices(
      (names, tf.constant(labels, tf.int32, shape=[len(labels)])))


def _split_folder(data: ml_collections.ConfigDict, role: str) -> str | None:
  """PATH/<split> of an ImageFolder source, or None for a flat folder."""
  root = _root(data)
  subfolders = _subfolders(root)
  if not subfolders & (_COMMON_SPLIT_NAMES
                       | {data.train_split, data.eval_split}):
    return None
  return os.path.join(
      root, data.train_split if role == "train" else data.eval_split)


def label_names(data: ml_collections.ConfigDict) -> list[str]:
  """Sorted class folder names of the train split: label i is names[i]."""
  train_dir = _split_folder(data, "train")
  if train_dir is None:
    raise ValueError(
        f"Image folder {_root(data)} has no split folders, so its"
        " images have no labels. For classification use the ImageFolder"
        f" layout PATH/{data.train_split}/<class>/<image> and"
        f" PATH/{data.eval_split}/<class>/<image>.")
  if not tf.io.gfile.isdir(train_dir):
    raise ValueError(f"Image folder {_root(data)} has no"
                     f" {data.train_split!r} folder (data.train_split).")
  names = sorted(_subfolders(train_dir))
  if not names:
    raise ValueError(
        f"{train_dir} has no class folders, so its images have no labels;"
        " put each class's images in its own folder"
        f" {train_dir}/<class>/<image>.")
  return names


def _labels(data: ml_collections.ConfigDict, role: str,
            files: Sequence[str]) -> list[int]:
  """The label of every file: the index of its class folder."""
  index = {name: i for i, name in enumerate(label_names(data))}
  split_dir = _split_folder(data, role)
  labels = []
  for path in files:
    parts = os.path.relpath(path, split_dir).split(os.sep)
    if len(parts) < 2:
      raise ValueError(f"{path} lies outside the class folders of {split_dir};"
                       " every image needs a class folder"
                       f" {split_dir}/<class>/<image>.")
    if parts[0] not in index:
      raise ValueError(
          f"{path}: class folder {parts[0]!r} of the {role} split is not a"
          f" class of the train split ({', '.join(index)}).")
    labels.append(index[parts[0]])
  return labels


def train_images(data: ml_collections.ConfigDict, *, seed: int,
                 process_index: int, process_count: int, start: int,
                 with_labels: bool = False) -> tf.data.Dataset:
  """Endless (position, image[, label]) of this process, from `start`.

  Every epoch is a fresh stateless permutation of all training files, read
  at any index without materialising it, so no shuffle buffer of decoded
  images is needed (data.shuffle_buffer is unused here).
  """
  files = _split_files(data, "train")
  if len(files) < process_count:
    raise ValueError(f"{len(files)} training images in {data.source} cannot"
                     f" be shared by {process_count} processes.")
  paths = tf.constant(files, tf.string)
  labels = (tf.constant(_labels(data, "train", files), tf.int32)
            if with_labels else None)
  order_seed = stream.stream_seed(seed, 0, stream.FOLDER_ORDER_STREAM)
  size = len(files)

  def locate(position: tf.Tensor) -> Any:
    example = stream.global_index(position, process_index, process_count)
    epoch, index = example // size, example % size
    if size > 1:
      epoch_seed = tf.cast(
          tf.random.experimental.stateless_fold_in(order_seed, epoch),
          tf.int64)
      index = tf.random.experimental.index_shuffle(index, epoch_seed,
                                                   size - 1)
    if labels is None:
      return position, paths[index]
    return position, paths[index], labels[index]

  positions = tf.data.Dataset.counter(start, dtype=tf.int64)
  return _decode_files(positions.map(locate), data, image_at=1)


def eval_images(data: ml_collections.ConfigDict, *, process_index: int,
                process_count: int,
                with_labels: bool = False) -> tf.data.Dataset:
  """Decoded eval images of this process's share, in `stream.mixed_order`."""
  files = stream.process_share(
      stream.mixed_order(
          stream.spread_eval_subset(_split_files(data, "eval"), data)),
      process_index, process_count)
  labels = _labels(data, "eval", files) if with_labels else None
  return _decode_files(_paths_dataset(files, labels), data)


def source_problems(data: ml_collections.ConfigDict) -> list[str]:
  """Whether the folder exists and both splits hold at least one image."""
  if not tf.io.gfile.isdir(_root(data)):
    return [f"Image folder {_root(data)} does not exist."]
  problems = []
  for role in ("train", "eval"):
    try:
      files = _split_files(data, role)
    except ValueError as e:
      problems.append(str(e))
      continue
    if not files:
      problems.append(f"No images ({', '.join(IMAGE_EXTENSIONS)}) for the"
                      f" {role} split of {data.source}.")
  return problems


def eval_num_examples(data: ml_collections.ConfigDict) -> int:
  """Eval files (after eval_num_images), before any is found undecodable."""
  return len(stream.spread_eval_subset(_split_files(data, "eval"), data))
