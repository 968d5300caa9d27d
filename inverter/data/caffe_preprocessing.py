"""Caffe's ImageNet preprocessing, and its inverse for display.

Every source's images pass through `caffe_preprocess` on their way to the
encoder: warped, BGR, mean subtracted, cropped, as the Caffe AlexNet weights
expect. `to_rgb_uint8` turns such arrays (and reconstructions) back into
viewable RGB.
"""

from __future__ import annotations

import functools
import io

import ml_collections
import numpy as np
import tensorflow as tf


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
  mean = _mean_bgr(data)
  pad = data.get("crop_padding", 0)
  if train and seed is None:
    raise ValueError("caffe_preprocess(train=True) needs a seed.")
  if train and pad:  # Small images (CIFAR-10): pad, then crop, as it reads.
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    centred = _bgr(warp(image, size)) - mean
    centred = tf.pad(centred, [[pad, pad], [pad, pad], [0, 0]])
    out = tf.image.stateless_random_crop(centred, [crop, crop, 3], crop_seed)
  else:
    # The same crop of the same values as warping, reordering and
    # subtracting the whole image first, but only the crop's pixels are
    # converted and subtracted, and an image already at the warp size is
    # cropped before it is even cast to float.
    if train:
      crop_seed, flip_seed = tf.unstack(
          tf.random.experimental.stateless_split(seed, 2))
      offset = _random_crop_offset(size, crop, crop_seed)
    else:
      start = (size - crop) // 2  # Caffe's rounding.
      offset = tf.constant([start, start, 0], tf.int32)
    window = _warped_window(image, size, offset, crop)
    if mean.ndim == 3:  # A mean image: its pixels under the window.
      mean = tf.slice(tf.constant(mean), offset, [crop, crop, 3])
    out = _bgr(window) - mean
  if train and data.mirror:
    out = tf.image.stateless_random_flip_left_right(out, flip_seed)
  return tf.ensure_shape(out, [crop, crop, 3])


def _bgr(image: tf.Tensor) -> tf.Tensor:
  """RGB -> BGR. tf.reverse: the strided slice [..., ::-1] does the same at
  a third of the speed (it was the slowest step of the whole pipeline)."""
  return tf.reverse(image, axis=[-1])


def warp(image: tf.Tensor, size: int) -> tf.Tensor:
  """float32 image warped (bilinear, aspect ratio ignored) to size x size:
  the pipeline's warp, and the one a prepared `*_warped` copy stores."""
  return tf.image.resize(image, [size, size], method="bilinear")


def _random_crop_offset(size: int, crop: int, seed: tf.Tensor) -> tf.Tensor:
  """[y, x, 0]: the offset `tf.image.stateless_random_crop` draws for a
  crop x crop x 3 crop of a size x size x 3 image with `seed` (the same
  formula, so crops stay what they were)."""
  limit = tf.constant([size - crop + 1, size - crop + 1, 1], tf.int32)
  draw = tf.random.stateless_uniform([3], seed=seed, maxval=tf.int32.max,
                                     dtype=tf.int32)
  return draw % limit


def _warped_window(image: tf.Tensor, size: int, offset: tf.Tensor,
                   crop: int) -> tf.Tensor:
  """float32 [crop, crop, 3] window at `offset` of the image warped to
  size x size; an image already that size (a prepared `*_warped` data set)
  is cropped first and never resized, which would return it unchanged."""
  already = tf.reduce_all(tf.equal(tf.shape(image)[:2], [size, size]))
  return tf.cond(
      already,
      lambda: tf.cast(tf.slice(image, offset, [crop, crop, 3]), tf.float32),
      lambda: tf.slice(warp(image, size), offset, [crop, crop, 3]))


def to_rgb_uint8(images: np.ndarray,
                 data: ml_collections.ConfigDict) -> np.ndarray:
  """Inverse of `caffe_preprocess` for display: BGR minus mean -> RGB uint8.

  Adds the per-channel mean back (a mean image contributes its per-channel
  average, because reconstructions need not have the mean image's size),
  reverses the channels, rounds and clips to 0..255. Accepts any [..., 3].
  """
  bgr = np.asarray(images, np.float32) + _channel_mean_bgr(data)
  return np.clip(np.rint(bgr[..., ::-1]), 0, 255).astype(np.uint8)
