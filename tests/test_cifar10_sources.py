"""The CIFAR-10 preset reads TFDS `cifar10` and a folder copy of it alike.

The reproduction in docs/results/cifar10 was run from JPEG folders (no
internet here); users with internet read TFDS `cifar10`. Its results must
not depend on which, so the same images must reach the network with the
same labels and the same preprocessing, and the evaluation must see the
same set. TFDS is mocked with the very images written to the folder (as
lossless PNGs), stored in a different order than the folder's.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from inverter import data as ip
from inverter import presets

CLASSES = tfds.builder("cifar10").info.features["label"].names
PER_CLASS = {"train": 2, "test": 3}


def png_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
  """A folder copy of a small CIFAR-10 and a mocked TFDS `cifar10` that
  yields the same images, stored in a shuffled order."""
  root = tmp_path_factory.mktemp("cifar10")
  rng = np.random.default_rng(0)
  stored = {}
  for split, per_class in PER_CLASS.items():
    examples = []
    for label, name in enumerate(CLASSES):
      (root / split / name).mkdir(parents=True)
      for i in range(per_class):
        image = rng.integers(0, 256, (32, 32, 3), np.uint8)
        Image.fromarray(image).save(root / split / name / f"{i:04d}.png")
        examples.append((png_bytes(image), label))
    order = rng.permutation(len(examples))
    stored[split] = [examples[i] for i in order]

  def as_dataset(self, split, **unused_kwargs):
    del self, unused_kwargs  # One process: every slice is the whole split.
    name, = [n for n in stored if f"'{n}'" in str(split) or split == n]
    images, labels = zip(*stored[name])
    return tf.data.Dataset.from_tensor_slices(
        {"image": list(images), "label": np.array(labels, np.int64)})

  return str(root), as_dataset


def data_config(source: str):
  return presets.get_config("conv5", f"cifar10,source={source}").data


def canonical(images: np.ndarray) -> list[bytes]:
  """Each image as bytes that do not change under a horizontal flip."""
  return sorted(min(im.tobytes(), im[:, ::-1].tobytes()) for im in images)


def eval_examples(data) -> tuple[np.ndarray, np.ndarray]:
  batches = list(ip.eval_iterator(data, local_batch_size=8, with_labels=True))
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  order = np.lexsort((np.array([im.tobytes() for im in images]), labels))
  return images[order], labels[order]


def test_both_sources_name_the_classes_alike(copies):
  folder, as_dataset = copies
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    assert ip.label_names(data_config("cifar10")) == CLASSES
  assert ip.label_names(data_config(f"folder:{folder}")) == CLASSES


def test_both_sources_evaluate_the_same_preprocessed_images(copies):
  folder, as_dataset = copies
  from_folder = eval_examples(data_config(f"folder:{folder}"))
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    tfds_config = data_config("cifar10")
    assert ip.eval_num_examples(tfds_config) == 10 * PER_CLASS["test"]
    from_tfds = eval_examples(tfds_config)
  assert len(from_folder[0]) == 10 * PER_CLASS["test"]
  np.testing.assert_array_equal(from_tfds[1], from_folder[1])
  np.testing.assert_array_equal(from_tfds[0], from_folder[0])


def test_an_epoch_of_training_sees_the_same_images_from_both(copies):
  folder, as_dataset = copies
  epoch = 10 * PER_CLASS["train"]

  def first_epoch(data):
    batches = ip.train_iterator(data, local_batch_size=epoch // 2, seed=0)
    return np.concatenate([next(batches)["image"] for _ in range(2)])

  from_folder = first_epoch(data_config(f"folder:{folder}"))
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    from_tfds = first_epoch(data_config("cifar10"))
  # Mirroring and order differ by source; the images themselves must not.
  assert canonical(from_tfds) == canonical(from_folder)
  assert len(set(canonical(from_folder))) == epoch
