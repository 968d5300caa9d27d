"""Input pipelines that feed Caffe-preprocessed images to the inversion models.

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
  uses 15 fixed crops of three held-out photos (see `_builtin_eval_boxes`).
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

import dataclasses
import functools
import io
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

Batch = dict[str, np.ndarray]
_T = TypeVar("_T")

FOLDER_PREFIX = "folder:"
BUILTIN_PREFIX = "builtin:"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Folder names that mark the ImageFolder (split folders) layout.
_COMMON_SPLIT_NAMES = frozenset({"train", "test", "val", "validation"})
# In a flat folder, files 0, 10, 20, ... of the sorted list are held out.
FLAT_FOLDER_EVAL_EVERY = 10

SKIMAGE_TRAIN_PHOTOS = (
    "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg",
    "grass.png", "gravel.png", "brick.png", "ihc.png", "camera.png",
    "moon.png", "coins.png", "cell.png", "clock_motion.png", "page.png",
    "color.png")
SKIMAGE_EVAL_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png")
MIN_SKIMAGE_TRAIN_PHOTOS = 5
# Side of the four corner eval crops, as a fraction of the shorter side.
BUILTIN_EVAL_CORNER_FRACTION = 0.6

IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")

# Upper bound on the TFDS part of `check_source`. Local data_dirs answer in
# well under a second; this only matters for a gs:// data_dir that hangs.
_TFDS_CHECK_TIMEOUT_S = 30.0

# Independent random streams derived from one user seed.
_PREPROCESS_STREAM = 0
_BUILTIN_CROP_STREAM = 1
_FOLDER_ORDER_STREAM = 2

# Key of the stream index of every example in a training batch.
POSITION = "position"


# --------------------------------------------------------------------------
# Caffe preprocessing and its inverse.
# --------------------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
  """Reads a whole file through tf.io.gfile, so gs:// paths work too."""
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


@functools.lru_cache(maxsize=8)
def _mean_image_bgr(mean_file: str, resize_size: int) -> np.ndarray:
  """Loads a Caffe mean image (.npy, [3, H, W], BGR) as [size, size, 3].

  Caffe subtracts the mean image at the resolution of the warped image, so a
  mean of another size (e.g. a 256x256 mean with resize_size 227) is resized
  bilinearly. Cached because it is needed each time a pipeline is traced.
  """
  mean = np.load(io.BytesIO(_read_bytes(mean_file)))
  if mean.ndim != 3 or mean.shape[0] != 3:
    raise ValueError(
        f"mean_file {mean_file} has shape {mean.shape}; expected Caffe layout"
        " (3, H, W) in BGR order.")
  hwc = np.transpose(mean.astype(np.float32), (1, 2, 0))
  if hwc.shape[:2] != (resize_size, resize_size):
    hwc = tf.image.resize(hwc, [resize_size, resize_size],
                          method="bilinear").numpy()
  return hwc


def _mean_bgr(data: ml_collections.ConfigDict) -> np.ndarray:
  """The BGR mean to subtract: a [size, size, 3] image or [3] per channel."""
  if data.mean_file:
    return _mean_image_bgr(data.mean_file, data.resize_size)
  return np.asarray(data.mean, np.float32)


def _channel_mean_bgr(data: ml_collections.ConfigDict) -> np.ndarray:
  """Per-channel BGR mean, [3]; a mean image is reduced to its average."""
  return _mean_bgr(data).reshape(-1, 3).mean(axis=0)


def caffe_preprocess(image: tf.Tensor,
                     *,
                     data: ml_collections.ConfigDict,
                     train: bool,
                     seed: tf.Tensor | None = None) -> tf.Tensor:
  """Turns one RGB uint8 [H, W, 3] image into a Caffe AlexNet input.

  Mirrors Caffe's ImageNet preprocessing:
  1. warp to ``resize_size x resize_size`` with bilinear interpolation,
     ignoring the aspect ratio (as Caffe's ``convert_imageset`` does);
  2. reorder channels RGB -> BGR;
  3. subtract the mean (``data.mean_file`` image if given, else the
     per-channel ``data.mean``, both BGR) at the warped resolution, i.e.
     before cropping, as Caffe's data layer does;
  4. crop ``crop_size``: uniformly random when ``train``, centred otherwise
     (offset ``(resize - crop) // 2``, Caffe's rounding); when ``train`` and
     ``data.crop_padding`` (default 0) is set, the warped image is first
     padded by that many zeros (= the mean colour) on every side, the usual
     translation augmentation for 32x32 classification (CIFAR-10);
  5. when ``train`` and ``data.mirror``, flip left-right with probability 1/2.

  Args:
    image: uint8 RGB image of any size.
    data: the data config.
    train: random crop/mirror (True) or deterministic centre crop (False).
    seed: int32/int64 [2] stateless seed; required when ``train``.

  Returns:
    float32 [crop, crop, 3] in **BGR** order, on the 0-255 scale minus mean.
  """
  size, crop = data.resize_size, data.crop_size
  warped = tf.image.resize(image, [size, size], method="bilinear")
  centred = warped[..., ::-1] - _mean_bgr(data)
  if train:
    if seed is None:
      raise ValueError("caffe_preprocess(train=True) needs a seed.")
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    pad = data.get("crop_padding", 0)
    if pad:
      centred = tf.pad(centred, [[pad, pad], [pad, pad], [0, 0]])
    out = tf.image.stateless_random_crop(centred, [crop, crop, 3], crop_seed)
    if data.mirror:
      out = tf.image.stateless_random_flip_left_right(out, flip_seed)
  else:
    offset = (size - crop) // 2
    out = centred[offset:offset + crop, offset:offset + crop]
  return tf.ensure_shape(out, [crop, crop, 3])


def to_rgb_uint8(images: np.ndarray,
                 data: ml_collections.ConfigDict) -> np.ndarray:
  """Inverse of `caffe_preprocess` for display: BGR minus mean -> RGB uint8.

  Adds the per-channel mean back (a mean image contributes its per-channel
  average, because reconstructions need not have the mean image's size),
  reverses the channels, rounds and clips to 0..255. Accepts any [..., 3].
  """
  bgr = np.asarray(images, np.float32) + _channel_mean_bgr(data)
  return np.clip(np.rint(bgr[..., ::-1]), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Shared tf.data plumbing.
# --------------------------------------------------------------------------


def _parallelism(data: ml_collections.ConfigDict) -> int:
  """num_parallel_calls for maps; -1 in the config means AUTOTUNE."""
  n = data.num_parallel_calls
  return tf.data.AUTOTUNE if n == -1 else n


def _stream_seed(seed: int, process_index: int, stream: int) -> tf.Tensor:
  """A [2] stateless seed for one random stream of one process."""
  base = tf.constant([seed, process_index], tf.int64)
  return tf.random.experimental.stateless_fold_in(base, stream)


def _global_index(position: tf.Tensor, process_index: int,
                  process_count: int) -> tf.Tensor:
  """The example of the global stream that stream index `position` of this
  process reads: every process_count-th, from process_index."""
  return process_index + process_count * tf.cast(position, tf.int64)


def _finalize(ds: tf.data.Dataset,
              data: ml_collections.ConfigDict) -> Iterator[Batch]:
  """Adds prefetching and determinism, and returns a numpy iterator."""
  if data.prefetch:
    ds = ds.prefetch(data.prefetch)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).as_numpy_iterator()


def _process_share(items: Sequence[_T], process_index: int,
                   process_count: int) -> list[_T]:
  """The items this process reads: every process_count-th from its index."""
  return list(items[process_index::process_count])


def _eval_subset(items: Sequence[_T],
                 data: ml_collections.ConfigDict) -> list[_T]:
  """The first ``eval_num_images`` items, or all of them when it is < 0."""
  n = data.eval_num_images
  return list(items) if n < 0 else list(items[:n])


def _spread_eval_subset(items: Sequence[_T],
                        data: ml_collections.ConfigDict) -> list[_T]:
  """``eval_num_images`` items evenly spaced over the sorted list (all when
  it is < 0): in the ImageFolder layout the first N files would all belong
  to the first class folders, a spread sample covers every class."""
  n, total = data.eval_num_images, len(items)
  if n < 0 or n >= total:
    return list(items)
  return [items[i * total // n] for i in range(n)]


# The fixed order of a folder's eval images; not the training seed, so that
# every run of every seed evaluates the same batches.
EVAL_ORDER_SEED = 2016


def _mixed_order(items: Sequence[_T]) -> list[_T]:
  """The items in one fixed pseudo-random order.

  The normalized error divides by the distance between images of the same
  batch. In sorted ImageFolder order a batch holds one or two classes, whose
  images are closer to each other than random pairs (4% on CIFAR-10), so
  the error came out higher than for TFDS, whose splits are stored shuffled.
  """
  order = np.random.default_rng(EVAL_ORDER_SEED).permutation(len(items))
  return [items[i] for i in order]


# --------------------------------------------------------------------------
# Source: TFDS.
# --------------------------------------------------------------------------


def _tfds_builder(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder of a TFDS source; never looks up the public GCS bucket."""
  return tfds.builder(data.source, data_dir=data.data_dir, try_gcs=False)


def _tfds_eval_split(data: ml_collections.ConfigDict) -> str:
  """The eval split, as a TFDS slice when eval_num_images caps it."""
  if data.eval_num_images < 0:
    return data.eval_split
  if not re.fullmatch(r"[\w-]+", data.eval_split):
    raise ValueError(
        f"data.eval_num_images={data.eval_num_images} needs a plain split"
        f" name, but data.eval_split={data.eval_split!r} is already a TFDS"
        " slice; cap it in the slice instead and set eval_num_images=-1.")
  return f"{data.eval_split}[:{data.eval_num_images}]"


def _tfds_encoded_images(data: ml_collections.ConfigDict, split: Any, *,
                         train: bool, seed: int | None,
                         with_labels: bool = False) -> tf.data.Dataset:
  """Undecoded image bytes of a TFDS split; other features are dropped.

  With labels, elements are (image bytes, int32 label) pairs. Decoding is
  left to `_decode_encoded` so that it runs in a parallel map after
  shuffling, where the buffer holds small encoded bytes.
  """
  ds = _tfds_builder(data).as_dataset(
      split=split,
      shuffle_files=train,
      read_config=tfds.ReadConfig(
          shuffle_seed=seed, shuffle_reshuffle_each_iteration=False),
      decoders={"image": tfds.decode.SkipDecoding()})
  if with_labels:
    return ds.map(lambda example: (example["image"],
                                   tf.cast(example["label"], tf.int32)))
  return ds.map(lambda example: example["image"])


def _decode_encoded(encoded: tf.data.Dataset,
                    data: ml_collections.ConfigDict,
                    image_at: int = 0) -> tf.data.Dataset:
  """Decodes image bytes to RGB uint8 [H, W, 3]; undecodable ones are dropped.

  Grayscale becomes 3 channels; TF also decodes CMYK JPEGs to RGB. Elements
  may be tuples (e.g. (bytes, label) or (position, bytes, label)) whose
  entry `image_at` holds the bytes; the others pass through unchanged.
  """
  def decode(*element: tf.Tensor) -> Any:
    image = tf.io.decode_image(element[image_at], channels=3,
                               expand_animations=False)
    if len(element) == 1:
      return image
    return (*element[:image_at], image, *element[image_at + 1:])
  return encoded.map(decode, num_parallel_calls=_parallelism(data)
                    ).ignore_errors(log_warning=True)


def _epoch_seed(seed: int, epoch: int) -> int:
  """The shuffle seed of one epoch (a plain int, as TFDS and tf.data want)."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _tfds_process_split(data: ml_collections.ConfigDict, process_index: int,
                        process_count: int) -> Any:
  return tfds.split_for_jax_process(
      data.train_split, process_index=process_index,
      process_count=process_count)


def train_share_size(data: ml_collections.ConfigDict, *,
                     process_index: int = 0, process_count: int = 1) -> int:
  """Examples in one epoch of this process's TFDS training stream (its even
  share of the train split). Folder and builtin streams are global."""
  if source_kind(data) != "tfds":
    raise ValueError(f"{data.source} is not a TFDS source.")
  split = _tfds_process_split(data, process_index, process_count)
  try:
    return _tfds_builder(data).info.splits[split].num_examples
  except KeyError:  # Not recorded (e.g. tfds.testing.mock_data): count.
    encoded = _tfds_encoded_images(data, split, train=False, seed=None)
    size = int(encoded.cardinality())
    return size if size >= 0 else int(encoded.reduce(0, lambda n, _: n + 1))


def _tfds_train_epochs(data: ml_collections.ConfigDict, *, seed: int,
                       process_index: int, process_count: int, start: int,
                       with_labels: bool = False
                       ) -> Iterator[tf.data.Dataset]:
  """This process's TFDS training stream, one dataset per epoch, from
  stream index `start`; elements are (position, image[, label]).

  Each epoch shuffles the files and a buffer with its own seed, so an epoch
  is the same sequence whenever it is rebuilt; starting inside an epoch
  replays its shuffle and drops the first examples before decoding.
  """
  split = _tfds_process_split(data, process_index, process_count)
  size = train_share_size(data, process_index=process_index,
                          process_count=process_count)
  if size == 0:
    raise ValueError(f"No training examples for process {process_index} of"
                     f" {process_count} in {data.source}:{data.train_split}.")
  epoch, offset = divmod(start, size)
  while True:
    epoch_seed = _epoch_seed(seed, epoch)
    encoded = _tfds_encoded_images(data, split, train=True, seed=epoch_seed,
                                   with_labels=with_labels)
    encoded = encoded.shuffle(data.shuffle_buffer, seed=epoch_seed,
                              reshuffle_each_iteration=False)
    positioned = encoded.enumerate(start=epoch * size).map(
        lambda k, example: (k, *(example if with_labels else (example,))))
    if offset:
      positioned = positioned.skip(offset)
      logging.info("Resuming the TFDS stream of process %d inside epoch %d:"
                   " replaying %d of its %d examples without decoding.",
                   process_index, epoch, offset, size)
    yield _decode_encoded(positioned, data, image_at=1)
    epoch, offset = epoch + 1, 0


def _tfds_eval_images(data: ml_collections.ConfigDict, *, process_index: int,
                      process_count: int,
                      with_labels: bool = False) -> tf.data.Dataset:
  """Decoded eval images of this process's share, in stored order."""
  split = tfds.split_for_jax_process(
      _tfds_eval_split(data), process_index=process_index,
      process_count=process_count)
  encoded = _tfds_encoded_images(data, split, train=False, seed=None,
                                 with_labels=with_labels)
  return _decode_encoded(encoded, data)


def _tfds_label_names(data: ml_collections.ConfigDict) -> list[str]:
  """Class names of a TFDS source's 'label' feature, in label order."""
  features = _tfds_builder(data).info.features
  label = features["label"] if "label" in features else None
  if not isinstance(label, tfds.features.ClassLabel):
    raise ValueError(
        f"TFDS dataset {data.source!r} has no 'label' class feature"
        f" (features: {sorted(features)}), so it cannot train a classifier.")
  return list(label.names)


def _tfds_eval_num_examples(data: ml_collections.ConfigDict) -> int:
  """Size of the (capped) eval split, from the dataset's known cardinality.

  Cardinality rather than ``info.splits`` so that it also works under
  `tfds.testing.mock_data`, where split metadata is unknown.
  """
  ds = _tfds_encoded_images(data, _tfds_eval_split(data), train=False,
                            seed=None)
  count = int(ds.cardinality())
  if count < 0:
    raise ValueError(f"TFDS split {_tfds_eval_split(data)!r} of"
                     f" {data.source!r} has unknown size.")
  return count


def _tfds_root(data: ml_collections.ConfigDict) -> str:
  """The TFDS data_dir in effect (the config's or TFDS's default)."""
  return data.data_dir or tfds.core.constants.get_default_data_dir()


def _imagenet_instructions(data: ml_collections.ConfigDict) -> str:
  """How to prepare imagenet2012, which TFDS cannot download by itself."""
  root = _tfds_root(data)
  manual = data.manual_dir or os.path.join(root, "downloads", "manual")
  return (
      f"TFDS dataset 'imagenet2012' is not prepared in data_dir {root}."
      " TFDS cannot download ImageNet. To prepare it:\n"
      f"  1. download {IMAGENET_TARS[0]} and {IMAGENET_TARS[1]} from"
      " https://image-net.org (account required) and put both tars in the"
      f" manual dir {manual}\n"
      f"  2. run: tfds build imagenet2012 --data_dir={root}"
      f" --manual_dir={manual}\n"
      "     (the data_dir may be a gs://bucket/path; point data.data_dir at"
      " it. The TFDS 4.9 `tfds` command imports apache_beam: run"
      " `pip install apache-beam` first if it says it is missing.)\n"
      "To run offline without ImageNet, use --config=configs/fc6.py:demo"
      " (builtin:skimage photos).")


def _tfds_not_prepared(data: ml_collections.ConfigDict) -> str:
  """How to prepare a downloadable TFDS dataset."""
  if data.source.split("/")[0] == "imagenet2012":
    return _imagenet_instructions(data)
  root = _tfds_root(data)
  return (f"TFDS dataset {data.source!r} is not prepared in data_dir {root}."
          f" Run `tfds build {data.source} --data_dir={root}` (downloads it;"
          " needs internet), or point data.data_dir at a prepared copy.")


def _tfds_problems(data: ml_collections.ConfigDict) -> list[str]:
  """Whether the TFDS source can be read, without reading any example.

  The probe is `DatasetBuilder.as_dataset` for each split in use: it fails
  fast on unprepared data or unknown split names, and it is what
  `tfds.testing.mock_data` patches, so mocked datasets count as usable.
  """
  try:
    builder = _tfds_builder(data)
  except tfds.core.DatasetNotFoundError:
    return [f"{data.source!r} is not a TFDS dataset name (nor folder:PATH or"
            " builtin:skimage)."]
  if "image" not in builder.info.features:
    return [f"TFDS dataset {data.source!r} has no 'image' feature (features:"
            f" {sorted(builder.info.features)})."]
  failures = []
  try:
    splits = [data.train_split, _tfds_eval_split(data)]
  except ValueError as e:
    return [str(e)]
  for split in splits:
    try:
      builder.as_dataset(split=split,
                         decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as e:  # pylint: disable=broad-except
      # Reported, not raised: TFDS signals missing data with AssertionError,
      # bad split names with ValueError/KeyError, I/O with tf.errors.
      failures.append(f"{split!r}: {e}")
  if failures and not builder.is_prepared():
    return [_tfds_not_prepared(data)]
  return [f"TFDS dataset {data.source!r} cannot read split {failure}"
          for failure in failures]


def _call_with_deadline(fn: Callable[[], list[str]], timeout_s: float,
                        what: str) -> list[str]:
  """Runs a check in a daemon thread, reporting a problem if it hangs.

  Needed because a gs:// data_dir on a machine without network or
  credentials can make TF's GCS client retry for minutes.
  """
  result: list[list[str]] = []

  def run() -> None:
    try:
      result.append(fn())
    except Exception as e:  # pylint: disable=broad-except
      result.append([f"{what} failed: {type(e).__name__}: {e}"])

  worker = threading.Thread(target=run, daemon=True)
  worker.start()
  worker.join(timeout_s)
  if not result:
    return [f"{what} did not answer within {timeout_s:.0f} s (unreachable"
            " data_dir, e.g. gs:// without network or credentials?)."]
  return result[0]


# --------------------------------------------------------------------------
# Source: image folder.
# --------------------------------------------------------------------------


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


def _folder_root(data: ml_collections.ConfigDict) -> str:
  """PATH of a folder:PATH source."""
  return data.source[len(FOLDER_PREFIX):]


def _folder_files(data: ml_collections.ConfigDict, role: str) -> list[str]:
  """Sorted image files of the train or eval split of a folder source.

  Raises:
    ValueError: the folder is missing, or it has split folders but not the
      one the config names (rather than guessing which one was meant).
  """
  root = _folder_root(data)
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
    with Image.open(io.BytesIO(_read_bytes(name))) as image:
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
  images = paths.map(decode, num_parallel_calls=_parallelism(data))
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
  root = _folder_root(data)
  subfolders = _subfolders(root)
  if not subfolders & (_COMMON_SPLIT_NAMES
                       | {data.train_split, data.eval_split}):
    return None
  return os.path.join(
      root, data.train_split if role == "train" else data.eval_split)


def _folder_label_names(data: ml_collections.ConfigDict) -> list[str]:
  """Sorted class folder names of the train split: label i is names[i]."""
  train_dir = _split_folder(data, "train")
  if train_dir is None:
    raise ValueError(
        f"Image folder {_folder_root(data)} has no split folders, so its"
        " images have no labels. For classification use the ImageFolder"
        f" layout PATH/{data.train_split}/<class>/<image> and"
        f" PATH/{data.eval_split}/<class>/<image>.")
  if not tf.io.gfile.isdir(train_dir):
    raise ValueError(f"Image folder {_folder_root(data)} has no"
                     f" {data.train_split!r} folder (data.train_split).")
  names = sorted(_subfolders(train_dir))
  if not names:
    raise ValueError(
        f"{train_dir} has no class folders, so its images have no labels;"
        " put each class's images in its own folder"
        f" {train_dir}/<class>/<image>.")
  return names


def _folder_labels(data: ml_collections.ConfigDict, role: str,
                   files: Sequence[str]) -> list[int]:
  """The label of every file: the index of its class folder."""
  index = {name: i for i, name in enumerate(_folder_label_names(data))}
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


def _folder_train_images(data: ml_collections.ConfigDict, *, seed: int,
                         process_index: int, process_count: int, start: int,
                         with_labels: bool = False) -> tf.data.Dataset:
  """Endless (position, image[, label]) of this process, from `start`.

  Every epoch is a fresh stateless permutation of all training files, read
  at any index without materialising it, so no shuffle buffer of decoded
  images is needed (data.shuffle_buffer is unused here).
  """
  files = _folder_files(data, "train")
  if len(files) < process_count:
    raise ValueError(f"{len(files)} training images in {data.source} cannot"
                     f" be shared by {process_count} processes.")
  paths = tf.constant(files, tf.string)
  labels = (tf.constant(_folder_labels(data, "train", files), tf.int32)
            if with_labels else None)
  order_seed = _stream_seed(seed, 0, _FOLDER_ORDER_STREAM)
  size = len(files)

  def locate(position: tf.Tensor) -> Any:
    example = _global_index(position, process_index, process_count)
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


def _folder_eval_images(data: ml_collections.ConfigDict, *, process_index: int,
                        process_count: int,
                        with_labels: bool = False) -> tf.data.Dataset:
  """Decoded eval images of this process's share, in `_mixed_order`."""
  files = _process_share(
      _mixed_order(_spread_eval_subset(_folder_files(data, "eval"), data)),
      process_index, process_count)
  labels = _folder_labels(data, "eval", files) if with_labels else None
  return _decode_files(_paths_dataset(files, labels), data)


def _folder_problems(data: ml_collections.ConfigDict) -> list[str]:
  """Whether the folder exists and both splits hold at least one image."""
  if not tf.io.gfile.isdir(_folder_root(data)):
    return [f"Image folder {_folder_root(data)} does not exist."]
  problems = []
  for role in ("train", "eval"):
    try:
      files = _folder_files(data, role)
    except ValueError as e:
      problems.append(str(e))
      continue
    if not files:
      problems.append(f"No images ({', '.join(IMAGE_EXTENSIONS)}) for the"
                      f" {role} split of {data.source}.")
  return problems


# --------------------------------------------------------------------------
# Source: photos bundled with scikit-image.
# --------------------------------------------------------------------------


def _skimage_data_dir() -> str:
  """The folder of scikit-image's sample data (imported only when used)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  return os.path.dirname(skimage.data.__file__)


def _check_builtin_name(data: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a builtin source other than builtin:skimage."""
  if data.source != f"{BUILTIN_PREFIX}skimage":
    raise ValueError(f"Unknown builtin source {data.source!r}; only"
                     " builtin:skimage exists.")


def _skimage_photos(names: Sequence[str]) -> list[str]:
  """Paths of the named photos that exist, sorted by name."""
  root = _skimage_data_dir()
  return [os.path.join(root, n) for n in sorted(names)
          if os.path.isfile(os.path.join(root, n))]


@functools.lru_cache(maxsize=None)
def _load_photo(path: str) -> np.ndarray:
  """A photo as RGB uint8 [H, W, 3]; cached as the photos are small."""
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"), np.uint8)


@dataclasses.dataclass(frozen=True)
class _PhotoBank:
  """Photos of different sizes packed into one flat tensor for tf.data."""
  pixels: tf.Tensor  # uint8 [sum of H*W*3]
  shapes: tf.Tensor  # int64 [n, 2]: (H, W)
  starts: tf.Tensor  # int64 [n]: offset of each photo in pixels

  @classmethod
  def of(cls, photos: Sequence[np.ndarray]) -> _PhotoBank:
    sizes = [p.size for p in photos]
    return cls(
        pixels=tf.constant(np.concatenate([p.reshape(-1) for p in photos])),
        shapes=tf.constant([p.shape[:2] for p in photos], tf.int64),
        starts=tf.constant(np.cumsum([0] + sizes[:-1]), tf.int64))

  def crop(self, index: tf.Tensor, y: tf.Tensor, x: tf.Tensor,
           side: tf.Tensor) -> tf.Tensor:
    """The side x side square at (y, x) of photo ``index``."""
    height, width = tf.unstack(self.shapes[index])
    start = self.starts[index]
    photo = tf.reshape(self.pixels[start:start + height * width * 3],
                       tf.stack([height, width, 3]))
    return tf.slice(photo, tf.stack([y, x, 0]), tf.stack([side, side, 3]))


def _builtin_no_labels(data: ml_collections.ConfigDict) -> ValueError:
  return ValueError(
      f"data.source={data.source!r} has no labels, so it cannot train a"
      " classifier; use a labelled TFDS dataset (e.g. 'cifar10') or an image"
      " folder 'folder:PATH' with PATH/<split>/<class>/<image>.")


def _builtin_train_images(data: ml_collections.ConfigDict, *, seed: int,
                          process_index: int, process_count: int, start: int,
                          with_labels: bool = False) -> tf.data.Dataset:
  """Endless (position, crop): random square crops of the training photos.

  Each crop picks a photo uniformly, a side uniformly in
  ``data.builtin_scales`` times the photo's shorter side, and a uniform
  position; all from a stateless seed of (seed, global crop number).
  """
  _check_builtin_name(data)
  if with_labels:
    raise _builtin_no_labels(data)
  paths = _skimage_photos(SKIMAGE_TRAIN_PHOTOS)
  if len(paths) < MIN_SKIMAGE_TRAIN_PHOTOS:
    raise ValueError(f"Only {len(paths)} scikit-image training photos found"
                     f" in {_skimage_data_dir()}.")
  bank = _PhotoBank.of([_load_photo(p) for p in paths])
  low, high = data.builtin_scales
  base_seed = _stream_seed(seed, 0, _BUILTIN_CROP_STREAM)

  def random_crop(position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    crop_number = _global_index(position, process_index, process_count)
    pick_seed, scale_seed, y_seed, x_seed = tf.unstack(
        tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(base_seed, crop_number),
            4))
    index = tf.random.stateless_uniform([], pick_seed, 0, len(paths),
                                        dtype=tf.int64)
    height, width = tf.unstack(bank.shapes[index])
    shorter = tf.minimum(height, width)
    scale = tf.random.stateless_uniform([], scale_seed, low, high)
    side = tf.clip_by_value(
        tf.cast(tf.round(scale * tf.cast(shorter, tf.float32)), tf.int64),
        1, shorter)
    y = tf.random.stateless_uniform([], y_seed, 0, height - side + 1,
                                    dtype=tf.int64)
    x = tf.random.stateless_uniform([], x_seed, 0, width - side + 1,
                                    dtype=tf.int64)
    return position, bank.crop(index, y, x, side)

  return tf.data.Dataset.counter(start, dtype=tf.int64).map(
      random_crop, num_parallel_calls=_parallelism(data))


def _builtin_eval_boxes(photos: Sequence[np.ndarray]
                       ) -> list[tuple[int, int, int, int]]:
  """Fixed eval crops as (photo, y, x, side), five per photo.

  Per photo: the centred square of the full shorter side, then the
  top-left, top-right, bottom-left and bottom-right squares of 0.6 x the
  shorter side. With the three held-out photos that is 15 eval images, which
  cover both whole scenes and zoomed-in detail.
  """
  boxes = []
  for index, photo in enumerate(photos):
    height, width = photo.shape[:2]
    shorter = min(height, width)
    boxes.append((index, (height - shorter) // 2, (width - shorter) // 2,
                  shorter))
    side = round(BUILTIN_EVAL_CORNER_FRACTION * shorter)
    for y in (0, height - side):
      for x in (0, width - side):
        boxes.append((index, y, x, side))
  return boxes


def _builtin_eval_setup(data: ml_collections.ConfigDict
                       ) -> tuple[_PhotoBank, list[tuple[int, int, int, int]]]:
  """The held-out photos and the (capped) list of eval crop boxes."""
  _check_builtin_name(data)
  photos = [_load_photo(p) for p in _skimage_photos(SKIMAGE_EVAL_PHOTOS)]
  if not photos:
    raise ValueError("No held-out scikit-image photos found in"
                     f" {_skimage_data_dir()}.")
  return _PhotoBank.of(photos), _eval_subset(_builtin_eval_boxes(photos), data)


def _builtin_eval_images(data: ml_collections.ConfigDict, *,
                         process_index: int, process_count: int,
                         with_labels: bool = False) -> tf.data.Dataset:
  """This process's share of the fixed eval crops."""
  if with_labels:
    raise _builtin_no_labels(data)
  bank, boxes = _builtin_eval_setup(data)
  shard = _process_share(boxes, process_index, process_count)
  ds = tf.data.Dataset.from_tensor_slices(
      tf.constant(shard, tf.int64, shape=[len(shard), 4]))
  return ds.map(lambda box: bank.crop(*tf.unstack(box)))


def _builtin_problems(data: ml_collections.ConfigDict) -> list[str]:
  """Whether scikit-image and enough of its photos are available."""
  try:
    _check_builtin_name(data)
    root = _skimage_data_dir()
  except (ValueError, ImportError) as e:
    return [f"{data.source}: {e}"]
  problems = []
  found = len(_skimage_photos(SKIMAGE_TRAIN_PHOTOS))
  if found < MIN_SKIMAGE_TRAIN_PHOTOS:
    problems.append(f"Only {found} of the scikit-image training photos are in"
                    f" {root}; need {MIN_SKIMAGE_TRAIN_PHOTOS}.")
  if not _skimage_photos(SKIMAGE_EVAL_PHOTOS):
    problems.append(f"None of {SKIMAGE_EVAL_PHOTOS} is in {root}.")
  low, high = data.builtin_scales
  if not 0 < low <= high <= 1:
    problems.append(f"data.builtin_scales={data.builtin_scales} must satisfy"
                    " 0 < low <= high <= 1.")
  return problems


# --------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------


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
    problems += _folder_problems(data)
  elif kind == "builtin":
    problems += _builtin_problems(data)
  else:
    problems += _call_with_deadline(
        lambda: _tfds_problems(data), _TFDS_CHECK_TIMEOUT_S,
        f"Checking TFDS dataset {data.source!r}")
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
    return _folder_label_names(data)
  if kind == "builtin":
    raise _builtin_no_labels(data)
  return _tfds_label_names(data)


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
    segments = _tfds_train_epochs(data, **common)
  else:
    readers = {"folder": _folder_train_images,
               "builtin": _builtin_train_images}
    segments = iter([readers[kind](data, **common)])
  base_seed = _stream_seed(seed, 0, _PREPROCESS_STREAM)

  def preprocess(position: tf.Tensor, image: tf.Tensor,
                 *label: tf.Tensor) -> dict[str, tf.Tensor]:
    example_seed = tf.random.experimental.stateless_fold_in(
        base_seed, _global_index(position, process_index, process_count))
    out = {"image": caffe_preprocess(image, data=data, train=True,
                                     seed=example_seed),
           POSITION: position}
    if label:
      out["label"] = label[0]
    return out

  def batches(segment: tf.data.Dataset) -> Iterator[Batch]:
    ds = segment.map(preprocess, num_parallel_calls=_parallelism(data))
    return _finalize(ds.batch(local_batch_size), data)

  return _rebatch((batches(segment) for segment in segments),
                  local_batch_size)


def _rebatch(streams: Iterator[Iterator[Batch]], size: int) -> Iterator[Batch]:
  """Batches of exactly `size` from consecutive streams of batches (e.g. one
  per epoch), joining an epoch's short last batch with the next epoch's."""
  pending: list[Batch] = []
  for stream in streams:
    for batch in stream:
      if not pending and len(batch[POSITION]) == size:
        yield batch
        continue
      pending.append(batch)
      while sum(len(b[POSITION]) for b in pending) >= size:
        joined = {k: np.concatenate([b[k] for b in pending]) for k in batch}
        yield {k: v[:size] for k, v in joined.items()}
        rest = {k: v[size:] for k, v in joined.items()}
        pending = [rest] if len(rest[POSITION]) else []


def eval_num_examples(data: ml_collections.ConfigDict) -> int:
  """Number of eval examples over all processes (after eval_num_images).

  Counts files/records; a folder file found undecodable later is skipped,
  so the number of True mask entries can be smaller.
  """
  kind = source_kind(data)
  if kind == "tfds":
    return _tfds_eval_num_examples(data)
  if kind == "folder":
    return len(_spread_eval_subset(_folder_files(data, "eval"), data))
  return len(_builtin_eval_setup(data)[1])


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
  readers = {"tfds": _tfds_eval_images, "folder": _folder_eval_images,
             "builtin": _builtin_eval_images}
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
  ds = images.map(preprocess, num_parallel_calls=_parallelism(data))
  ds = ds.concatenate(padding).take(num_batches * local_batch_size)
  return _finalize(ds.batch(local_batch_size), data)
