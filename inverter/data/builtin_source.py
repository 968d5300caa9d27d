"""Source: the photographs bundled with scikit-image (``builtin:skimage``).

For offline demos and tests. Training examples are an endless stream of
random square crops of the training photos; evaluation uses 15 fixed crops of
three held-out photos (see `_eval_boxes`). It has no labels.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import ml_collections
import numpy as np
import tensorflow as tf
from PIL import Image

from inverter.data import stream

BUILTIN_PREFIX = "builtin:"

SKIMAGE_TRAIN_PHOTOS = (
    "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg",
    "grass.png", "gravel.png", "brick.png", "ihc.png", "camera.png",
    "moon.png", "coins.png", "cell.png", "clock_motion.png", "page.png",
    "color.png")
SKIMAGE_EVAL_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png")
MIN_SKIMAGE_TRAIN_PHOTOS = 5
# Side of the four corner eval crops, as a fraction of the shorter side.
BUILTIN_EVAL_CORNER_FRACTION = 0.6


def _skimage_data_dir() -> str:
  """The folder of scikit-image's sample data (imported only when used)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  return os.path.dirname(skimage.data.__file__)


def _check_name(data: ml_collections.ConfigDict) -> None:
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


def no_labels_error(data: ml_collections.ConfigDict) -> ValueError:
  return ValueError(
      f"data.source={data.source!r} has no labels, so it cannot train a"
      " classifier; use a labelled TFDS dataset (e.g. 'cifar10') or an image"
      " folder 'folder:PATH' with PATH/<split>/<class>/<image>.")


def train_images(data: ml_collections.ConfigDict, *, seed: int,
                 process_index: int, process_count: int, start: int,
                 with_labels: bool = False) -> tf.data.Dataset:
  """Endless (position, crop): random square crops of the training photos.

  Each crop picks a photo uniformly, a side uniformly in
  ``data.builtin_scales`` times the photo's shorter side, and a uniform
  position; all from a stateless seed of (seed, global crop number).
  """
  _check_name(data)
  if with_labels:
    raise no_labels_error(data)
  paths = _skimage_photos(SKIMAGE_TRAIN_PHOTOS)
  if len(paths) < MIN_SKIMAGE_TRAIN_PHOTOS:
    raise ValueError(f"Only {len(paths)} scikit-image training photos found"
                     f" in {_skimage_data_dir()}.")
  bank = _PhotoBank.of([_load_photo(p) for p in paths])
  low, high = data.builtin_scales
  base_seed = stream.stream_seed(seed, 0, stream.BUILTIN_CROP_STREAM)

  def random_crop(position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    crop_number = stream.global_index(position, process_index, process_count)
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
      random_crop, num_parallel_calls=stream.parallelism(data))


def _eval_boxes(photos: Sequence[np.ndarray]
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


def _eval_setup(data: ml_collections.ConfigDict
                ) -> tuple[_PhotoBank, list[tuple[int, int, int, int]]]:
  """The held-out photos and the (capped) list of eval crop boxes."""
  _check_name(data)
  photos = [_load_photo(p) for p in _skimage_photos(SKIMAGE_EVAL_PHOTOS)]
  if not photos:
    raise ValueError("No held-out scikit-image photos found in"
                     f" {_skimage_data_dir()}.")
  return _PhotoBank.of(photos), stream.eval_subset(_eval_boxes(photos), data)


def eval_images(data: ml_collections.ConfigDict, *,
                process_index: int, process_count: int,
                with_labels: bool = False) -> tf.data.Dataset:
  """This process's share of the fixed eval crops."""
  if with_labels:
    raise no_labels_error(data)
  bank, boxes = _eval_setup(data)
  shard = stream.process_share(boxes, process_index, process_count)
  ds = tf.data.Dataset.from_tensor_slices(
      tf.constant(shard, tf.int64, shape=[len(shard), 4]))
  return ds.map(lambda box: bank.crop(*tf.unstack(box)))


def source_problems(data: ml_collections.ConfigDict) -> list[str]:
  """Whether scikit-image and enough of its photos are available."""
  try:
    _check_name(data)
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


def eval_num_examples(data: ml_collections.ConfigDict) -> int:
  """Number of fixed eval crops (after eval_num_images)."""
  return len(_eval_setup(data)[1])
