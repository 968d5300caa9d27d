"""Source: a prepared TFDS data set (`data.source` is its name).

Any data set with an ``image`` feature works; every other feature is dropped
(``label`` is kept when labels are asked for). TFRecords cannot be read at an
index, so each process reads its even share of the train split, one seeded
shuffle per epoch, and a resume inside an epoch replays that shuffle without
decoding. `source_problems` says whether the data set can be read without
reading any example, and explains how to prepare it when it is not.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from inverter.data import stream

IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")

# Upper bound on `source_problems`. Local data_dirs answer in well under a
# second; this only matters for a gs:// data_dir that hangs.
CHECK_TIMEOUT_S = 30.0


def dataset_builder(
    data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder of a TFDS source; never looks up the public GCS bucket."""
  return tfds.builder(data.source, data_dir=data.data_dir, try_gcs=False)


def eval_split_slice(data: ml_collections.ConfigDict) -> str:
  """The eval split, as a TFDS slice when eval_num_images caps it."""
  if data.eval_num_images < 0:
    return data.eval_split
  if not re.fullmatch(r"[\w-]+", data.eval_split):
    raise ValueError(
        f"data.eval_num_images={data.eval_num_images} needs a plain split"
        f" name, but data.eval_split={data.eval_split!r} is already a TFDS"
        " slice; cap it in the slice instead and set eval_num_images=-1.")
  return f"{data.eval_split}[:{data.eval_num_images}]"


def encoded_images(data: ml_collections.ConfigDict, split: Any, *,
                   train: bool, seed: int | None,
                   with_labels: bool = False) -> tf.data.Dataset:
  """Undecoded image bytes of a TFDS split; other features are dropped.

  With labels, elements are (image bytes, int32 label) pairs. Decoding is
  left to `_decode_encoded` so that it runs in a parallel map after
  shuffling, where the buffer holds small encoded bytes.
  """
  ds = dataset_builder(data).as_dataset(
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
  return encoded.map(decode, num_parallel_calls=stream.parallelism(data)
                     ).ignore_errors(log_warning=True)


def _process_split(data: ml_collections.ConfigDict, process_index: int,
                   process_count: int) -> Any:
  return tfds.split_for_jax_process(
      data.train_split, process_index=process_index,
      process_count=process_count)


def train_share_size(data: ml_collections.ConfigDict, *,
                     process_index: int = 0, process_count: int = 1) -> int:
  """Examples in one epoch of this process's TFDS training stream (its even
  share of the train split)."""
  split = _process_split(data, process_index, process_count)
  try:
    return dataset_builder(data).info.splits[split].num_examples
  except KeyError:  # Not recorded (e.g. tfds.testing.mock_data): count.
    encoded = encoded_images(data, split, train=False, seed=None)
    size = int(encoded.cardinality())
    return size if size >= 0 else int(encoded.reduce(0, lambda n, _: n + 1))


def train_epochs(data: ml_collections.ConfigDict, *, seed: int,
                 process_index: int, process_count: int, start: int,
                 with_labels: bool = False
                 ) -> Iterator[tf.data.Dataset]:
  """This process's TFDS training stream, one dataset per epoch, from
  stream index `start`; elements are (position, image[, label]).

  Each epoch shuffles the files and a buffer with its own seed, so an epoch
  is the same sequence whenever it is rebuilt; starting inside an epoch
  replays its shuffle and drops the first examples before decoding.
  """
  split = _process_split(data, process_index, process_count)
  size = train_share_size(data, process_index=process_index,
                          process_count=process_count)
  if size == 0:
    raise ValueError(f"No training examples for process {process_index} of"
                     f" {process_count} in {data.source}:{data.train_split}.")
  epoch, offset = divmod(start, size)
  while True:
    epoch_seed = stream.epoch_seed(seed, epoch)
    encoded = encoded_images(data, split, train=True, seed=epoch_seed,
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


def eval_images(data: ml_collections.ConfigDict, *, process_index: int,
                process_count: int,
                with_labels: bool = False) -> tf.data.Dataset:
  """Decoded eval images of this process's share, in stored order."""
  split = tfds.split_for_jax_process(
      eval_split_slice(data), process_index=process_index,
      process_count=process_count)
  encoded = encoded_images(data, split, train=False, seed=None,
                           with_labels=with_labels)
  return _decode_encoded(encoded, data)


def label_names(data: ml_collections.ConfigDict) -> list[str]:
  """Class names of a TFDS source's 'label' feature, in label order."""
  features = dataset_builder(data).info.features
  label = features["label"] if "label" in features else None
  if not isinstance(label, tfds.features.ClassLabel):
    raise ValueError(
        f"TFDS dataset {data.source!r} has no 'label' class feature"
        f" (features: {sorted(features)}), so it cannot train a classifier.")
  return list(label.names)


def eval_num_examples(data: ml_collections.ConfigDict) -> int:
  """Size of the (capped) eval split, from the dataset's known cardinality.

  Cardinality rather than ``info.splits`` so that it also works under
  `tfds.testing.mock_data`, where split metadata is unknown.
  """
  ds = encoded_images(data, eval_split_slice(data), train=False,
                      seed=None)
  count = int(ds.cardinality())
  if count < 0:
    raise ValueError(f"TFDS split {eval_split_slice(data)!r} of"
                     f" {data.source!r} has unknown size.")
  return count


def _root(data: ml_collections.ConfigDict) -> str:
  """The TFDS data_dir in effect (the config's or TFDS's default)."""
  return data.data_dir or tfds.core.constants.get_default_data_dir()


def _imagenet_instructions(data: ml_collections.ConfigDict) -> str:
  """How to prepare imagenet2012, which TFDS cannot download by itself."""
  root = _root(data)
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


def _not_prepared(data: ml_collections.ConfigDict) -> str:
  """How to prepare a downloadable TFDS dataset."""
  if data.source.split("/")[0] == "imagenet2012":
    return _imagenet_instructions(data)
  root = _root(data)
  return (f"TFDS dataset {data.source!r} is not prepared in data_dir {root}."
          f" Run `tfds build {data.source} --data_dir={root}` (downloads it;"
          " needs internet), or point data.data_dir at a prepared copy.")


def _problems(data: ml_collections.ConfigDict) -> list[str]:
  """Whether the TFDS source can be read, without reading any example.

  The probe is `DatasetBuilder.as_dataset` for each split in use: it fails
  fast on unprepared data or unknown split names, and it is what
  `tfds.testing.mock_data` patches, so mocked datasets count as usable.
  """
  try:
    builder = dataset_builder(data)
  except tfds.core.DatasetNotFoundError:
    return [f"{data.source!r} is not a TFDS dataset name (nor folder:PATH or"
            " builtin:skimage)."]
  if "image" not in builder.info.features:
    return [f"TFDS dataset {data.source!r} has no 'image' feature (features:"
            f" {sorted(builder.info.features)})."]
  failures = []
  try:
    splits = [data.train_split, eval_split_slice(data)]
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
    return [_not_prepared(data)]
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


def source_problems(data: ml_collections.ConfigDict) -> list[str]:
  """`_problems`, bounded by CHECK_TIMEOUT_S in case a gs:// data_dir hangs."""
  return _call_with_deadline(lambda: _problems(data), CHECK_TIMEOUT_S,
                             f"Checking TFDS dataset {data.source!r}")
