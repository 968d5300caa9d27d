"""The full-resolution path on real photographs from ../shared/data.

Uses the project's shared, read-only sample data (500 ImageNet images at their
original sizes, nine of them grayscale; CIFAR-10 as JPEG folders). CI always
has it; the skip only applies to a checkout without ../shared.
"""

import pathlib

import numpy as np
import pytest

from inverter import presets
from inverter import data as data_lib

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGENET_SAMPLE = SHARED / "imagenet-sample"
CIFAR10 = SHARED / "cifar10"

requires_shared = pytest.mark.skipif(
    not IMAGENET_SAMPLE.is_dir() or not CIFAR10.is_dir(),
    reason=f"shared sample data not found at {SHARED}")


@requires_shared
def test_imagenet_sample_decodes_at_227_with_caffe_preprocessing():
  config = presets.get_config("fc6", f"source=folder:{IMAGENET_SAMPLE}")
  data = config.data
  data.eval_num_images = -1
  before = data_lib.skipped_images()
  images, count = [], 0
  for batch in data_lib.eval_iterator(data, local_batch_size=16):
    assert batch["image"].shape == (16, 227, 227, 3)
    count += int(batch["mask"].sum())
    images.append(batch["image"][batch["mask"]])
  # A flat folder: every 10th of the 500 files is held out for evaluation.
  assert count == 50
  assert data_lib.skipped_images() == before
  pixels = np.concatenate(images)
  # Mean-subtracted BGR on the 0-255 scale: centred near 0, spanning +-100s.
  assert abs(float(pixels.mean())) < 40 and pixels.std() > 30
  assert pixels.min() >= -124 and pixels.max() <= 256 - 104


@requires_shared
def test_cifar10_folder_layout_gives_its_test_split():
  config = presets.get_config("conv1", f"test,source=folder:{CIFAR10}")
  config.data.eval_split = "test"
  config.data.eval_num_images = 40
  assert data_lib.check_source(config.data) == []
  batches = list(data_lib.eval_iterator(config.data,
                                        local_batch_size=8))
  assert sum(int(b["mask"].sum()) for b in batches) == 40
  train = next(data_lib.train_iterator(config.data, local_batch_size=8,
                                       seed=0))
  assert train["image"].shape == (8, 32, 32, 3)
