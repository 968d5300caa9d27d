"""A prepared image data set once more, every image warped to 256x256.

Caffe trained the AlexNets on an LMDB of images already warped to 256x256
(`convert_imageset --resize_height=256 --resize_width=256`), so that a
training step only decodes and crops. This builder does the same for any
prepared TFDS image data set with labels (ImageNet by default): it writes
`<source>_warped` (e.g. `imagenet2012_warped`) version 1.0.0 with the same
splits, labels and file names, each image warped (bilinear, aspect ratio
ignored, as the pipeline's `caffe_preprocess` does) to `size` x `size`,
rounded to uint8 and stored as a JPEG of quality 95 without chroma
subsampling. The input pipeline then skips its own warp for images already
at `data.resize_size` and takes the same random crops and mirrors, so a
training step sees the same distribution.

Why JPEG quality 95 (4:4:4): measured on the 500 shared ImageNet sample
photographs (docs/benchmarks.md), it decodes and crops at about 2.2x the
rate of decoding and warping the originals, at 43 KB per image (55 GB for
ImageNet's training set); raw uint8 pixels would be 1.5x faster again but
197 KB per image (250 GB, 3 GB/s of disk reads for an 8-GPU host), and
quality 95 keeps the pixels within 2.2/255 of the exact warp on average.
"""

from __future__ import annotations

import os
from typing import Iterator

import tensorflow as tf
import tensorflow_datasets as tfds

from inverter import data, errors

SIZE = 256
QUALITY = 95


class SourceError(errors.UserError, ValueError):
  """The source data set cannot be read as a labelled image data set."""


def warp_and_encode(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
  """Image file bytes -> JPEG bytes of the image warped to size x size."""
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  warped = data.warp(image, size)
  pixels = tf.cast(tf.clip_by_value(tf.round(warped), 0, 255), tf.uint8)
  return tf.io.encode_jpeg(pixels, quality=QUALITY, chroma_downsampling=False)


# Where a source keeps its file names (TFDS data sets / ImageFolder).
_NAME_KEYS = ("file_name", "image/filename")


def source_builder(source: str | tfds.core.DatasetBuilder,
                   data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared source data set (a name, or a builder such as
  `tfds.folder_dataset.ImageFolder`); refused unless it has image and
  label."""
  if isinstance(source, tfds.core.DatasetBuilder):
    builder = source
  else:
    try:
      builder = tfds.builder(source, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # pylint: disable=broad-except
      raise SourceError(f"Cannot open the TFDS data set {source!r} in"
                        f" {data_dir or 'the default data_dir'}: {e}"
                        ) from None
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise SourceError(f"{source} has features {list(features)}; a warped copy"
                      " needs 'image' and 'label'.")
  if not builder.info.splits:
    raise SourceError(f"{source} is not prepared in {data_dir}: prepare it"
                      " first (docs/data.md).")
  return builder


class Warped(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder of `<source>_warped` from a prepared source data set."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "The source's images warped to 256x256, JPEG"
                            " quality 95 (4:4:4)."}

  def __init__(self, *, source: tfds.core.DatasetBuilder, splits: list[str],
               size: int = SIZE, num_parallel_calls: int = -1, **kwargs):
    self._source, self._splits, self._size = source, splits, size
    self._parallel = num_parallel_calls
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    source = self._source.info
    return self.dataset_info_from_configs(
        description=(f"{source.name} with every image warped to"
                     f" {self._size}x{self._size} (bilinear, aspect ratio"
                     f" ignored), JPEG quality {QUALITY}, as Caffe's"
                     " convert_imageset prepared ImageNet."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(self._size, self._size, 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(
                names=source.features["label"].names),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self._splits}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
    features = self._source.info.features
    name_key = next((k for k in _NAME_KEYS if k in features), None)
    ds = self._source.as_dataset(
        split=split, shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.enumerate().map(
        lambda i, ex: (i, warp_and_encode(ex["image"], self._size),
                       ex["label"],
                       ex[name_key] if name_key else tf.as_string(i)),
        num_parallel_calls=self._parallel, deterministic=True)
    for index, image, label, name in tfds.as_numpy(ds):
      name = name.decode()
      yield f"{index:09d}_{name}", dict(image=image, label=int(label),
                                        file_name=name)


def builder_class(source_name: str) -> type[Warped]:
  """`Warped` named after its source (imagenet2012 -> imagenet2012_warped),
  which is where TFDS writes and finds it."""
  return type("Warped", (Warped,), {"name": f"{source_name}_warped",
                                    "__module__": __name__},
              skip_registration=True)


def prepare(data_dir: str,
            source: str | tfds.core.DatasetBuilder = "imagenet2012",
            source_data_dir: str | None = None,
            splits: tuple[str, ...] = ("train", "validation"),
            size: int = SIZE) -> tfds.core.DatasetBuilder:
  """Writes `<source>_warped` into `data_dir`; returns its builder.

  The source is opened (and its splits checked) before anything is written;
  an already prepared copy is left as it is.
  """
  builder = source_builder(source, source_data_dir)
  missing = [s for s in splits if s not in builder.info.splits]
  if missing:
    raise SourceError(f"{source} has no split(s) {missing}; it has"
                      f" {list(builder.info.splits)}.")
  warped = builder_class(builder.name)(
      source=builder, splits=list(splits), size=size,
      data_dir=os.path.expanduser(data_dir))
  warped.download_and_prepare()
  return warped
