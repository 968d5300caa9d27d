"""Specification tests for inverter.data, the input pipeline.

Images are identified after the pipeline by their (constant) colour, so the
tests can tell exactly which files or records came out of an iterator.
"""

from __future__ import annotations

import io
import itertools
import os
import threading
import time
from collections.abc import Iterable, Sequence

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from inverter import data as ip
from inverter.data import tfds_source

MEAN_BGR = (104.0, 117.0, 123.0)


def make_config(**overrides) -> ml_collections.ConfigDict:
  """A small data config (tiny images keep the tests fast)."""
  data = ml_collections.ConfigDict(dict(
      source="builtin:skimage", data_dir=None, manual_dir=None,
      train_split="train", eval_split="validation", resize_size=16,
      crop_size=12, mirror=True, mean=MEAN_BGR, mean_file=None,
      shuffle_buffer=64, num_parallel_calls=-1, prefetch=2,
      eval_num_images=-1, builtin_scales=(0.2, 1.0)))
  data.update(overrides)
  return data


def solid(rgb: Sequence[int], height: int = 20, width: int = 24) -> np.ndarray:
  return np.broadcast_to(np.asarray(rgb, np.uint8),
                         (height, width, 3)).copy()


def distinct_colours(n: int) -> list[tuple[int, int, int]]:
  """n (<= 64) RGB colours, pairwise at least 60 levels apart in a channel."""
  levels = (30, 90, 150, 210)
  return list(itertools.product(levels, repeat=3))[:n]


def centre_colours(batches: Iterable[ip.Batch],
                   data: ml_collections.ConfigDict) -> list[np.ndarray]:
  """RGB colour at the centre of every real (unmasked) image."""
  colours = []
  for batch in batches:
    rgb = ip.to_rgb_uint8(batch["image"], data).astype(int)
    mask = batch.get("mask", np.ones(len(rgb), bool))
    c = rgb.shape[1] // 2
    colours.extend(rgb[i, c, c] for i in np.flatnonzero(mask))
  return colours


def identify(colours: Iterable[np.ndarray],
             palette: Sequence[Sequence[int]], tol: int = 8) -> list[int]:
  """Index in palette of each colour; fails if one matches nothing."""
  palette = np.asarray(palette)
  ids = []
  for colour in colours:
    dist = np.abs(palette - colour).max(axis=1)
    assert dist.min() <= tol, f"{colour} matches no expected colour"
    ids.append(int(dist.argmin()))
  return ids


# ---------------------------------------------------------------------------
# Files on disk.
# ---------------------------------------------------------------------------


def save(path: str, array: np.ndarray, mode: str = "RGB",
         fmt: str = "JPEG") -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(array)
  if mode == "RGBA":
    image.putalpha(128)
  elif mode != "RGB":
    image = image.convert(mode)
  image.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def write_zoo(folder: str, colours: Sequence[Sequence[int]]) -> None:
  """One valid image per colour in awkward encodings, plus a corrupt file.

  colours[1] must be grey, as it is stored as a grayscale JPEG.
  """
  save(f"{folder}/a/rgb.jpg", solid(colours[0]))
  save(f"{folder}/a/gray.jpg", solid(colours[1]), mode="L")
  save(f"{folder}/b/cmyk.jpg", solid(colours[2]), mode="CMYK")
  save(f"{folder}/b/png_inside.JPEG", solid(colours[3]), fmt="PNG")
  save(f"{folder}/b/alpha.png", solid(colours[4]), mode="RGBA", fmt="PNG")
  with open(f"{folder}/b/corrupt.jpg", "wb") as f:
    f.write(np.random.default_rng(0).bytes(500))


ZOO_COLOURS = [(200, 50, 10), (90, 90, 90), (30, 160, 220), (250, 200, 5),
               (10, 240, 120)]
ZOO_SIZE = len(ZOO_COLOURS)


@pytest.fixture
def image_folder(tmp_path) -> str:
  """ImageFolder layout: train/ and validation/ each hold the zoo."""
  write_zoo(f"{tmp_path}/train", ZOO_COLOURS)
  write_zoo(f"{tmp_path}/validation", ZOO_COLOURS)
  return str(tmp_path)


def write_flat_folder(root: str, n: int) -> list[str]:
  """n solid JPEGs (half in a class subfolder); returns paths in order."""
  paths = []
  for i, colour in enumerate(distinct_colours(n)):
    path = f'{root}/{"cats/" if i % 2 else ""}img{i:02d}.png'
    save(path, solid(colour), fmt="PNG")
    paths.append(path)
  return paths


# ---------------------------------------------------------------------------
# A tiny prepared TFDS dataset (prepared offline into tmp dirs).
# ---------------------------------------------------------------------------

TINY_TRAIN, TINY_VALIDATION = 12, 7


class InverterTinyPhotos(tfds.core.GeneratorBasedBuilder):
  """Solid-colour images of various sizes; record i has colour palette[i]."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, TINY_TRAIN),
            "validation": self._generate_examples(TINY_TRAIN,
                                                  TINY_VALIDATION)}

  def _generate_examples(self, first: int, n: int):
    palette = distinct_colours(TINY_TRAIN + TINY_VALIDATION)
    for i in range(first, first + n):
      yield i, {"image": solid(palette[i], 10 + i, 14), "label": i % 2}


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder("inverter_tiny_photos", data_dir=data_dir).download_and_prepare(
      file_format="tfrecord")
  return data_dir


def tiny_palette() -> list[tuple[int, int, int]]:
  return distinct_colours(TINY_TRAIN + TINY_VALIDATION)


# ---------------------------------------------------------------------------
# caffe_preprocess and to_rgb_uint8.
# ---------------------------------------------------------------------------


def test_preprocess_output_is_crop_sized_float32():
  data = make_config(resize_size=16, crop_size=12)
  image = tf.constant(solid((1, 2, 3), 30, 50))
  for train in (False, True):
    out = ip.caffe_preprocess(image, data=data, train=train, seed=[1, 2])
    assert out.shape == (12, 12, 3)
    assert out.dtype == tf.float32


@pytest.mark.parametrize("train", [False, True])
def test_preprocess_subtracts_mean_and_outputs_bgr(train):
  data = make_config()
  out = ip.caffe_preprocess(tf.constant(solid((10, 20, 30), 25, 40)),
                            data=data, train=train, seed=[3, 4]).numpy()
  expected = np.array([30 - 104, 20 - 117, 10 - 123], np.float32)
  np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape),
                             atol=1e-4)


def straightforward_preprocess(image, data, train, seed, mean):
  """Caffe's order, on the whole image: warp, BGR, subtract, crop, mirror
  (what caffe_preprocess computes, only with more work)."""
  size, crop = data.resize_size, data.crop_size
  centred = tf.image.resize(image, [size, size])[..., ::-1] - mean
  if not train:
    start = (size - crop) // 2
    return centred[start:start + crop, start:start + crop]
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  out = tf.image.stateless_random_crop(centred, [crop, crop, 3], crop_seed)
  if data.mirror:
    out = tf.image.stateless_random_flip_left_right(out, flip_seed)
  return out


@pytest.mark.parametrize("height,width", [(40, 52), (24, 24)])
@pytest.mark.parametrize("mean_image", [False, True])
def test_cropping_first_gives_exactly_the_straightforward_result(
    tmp_path, height, width, mean_image):
  # (24, 24): already at the warp size, as a prepared *_warped data set.
  data = make_config(resize_size=24, crop_size=17)
  rng = np.random.default_rng(height)
  mean = np.asarray(data.mean, np.float32)
  if mean_image:
    mean = rng.uniform(90, 130, (24, 24, 3)).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean.transpose(2, 0, 1))
    data.mean_file = str(tmp_path / "mean.npy")
  image = tf.constant(rng.integers(0, 256, (height, width, 3), np.uint8))
  for train, seed in [(False, None), (True, [1, 2]), (True, [5, 9]),
                      (True, [7, 3])]:
    seed = None if seed is None else tf.constant(seed, tf.int64)
    np.testing.assert_array_equal(
        ip.caffe_preprocess(image, data=data, train=train, seed=seed),
        straightforward_preprocess(image, data, train, seed, mean))


def test_eval_crop_is_the_centre():
  # resize == image size, so the warp is the identity; the marker is exactly
  # the centre crop window, offset (10 - 4) // 2 = 3.
  data = make_config(resize_size=10, crop_size=4, mean=(0., 0., 0.))
  image = np.zeros((10, 10, 3), np.uint8)
  image[3:7, 3:7] = 255
  out = ip.caffe_preprocess(tf.constant(image), data=data, train=False)
  assert np.all(out.numpy() == 255)


def test_warp_ignores_aspect_ratio():
  # A wide image whose left half is black and right half white must still
  # be split down the middle after warping to a square.
  data = make_config(resize_size=8, crop_size=8, mean=(0., 0., 0.))
  image = np.zeros((4, 40, 3), np.uint8)
  image[:, 20:] = 255
  out = ip.caffe_preprocess(tf.constant(image), data=data, train=False)
  assert np.all(out.numpy()[:, :3] == 0)
  assert np.all(out.numpy()[:, 5:] == 255)


def test_train_crop_is_a_function_of_the_seed():
  data = make_config(resize_size=32, crop_size=20)
  image = tf.constant(np.random.default_rng(0).integers(
      0, 256, (32, 32, 3), dtype=np.uint8))
  crop = lambda seed: ip.caffe_preprocess(  # pylint: disable=g-long-lambda
      image, data=data, train=True, seed=tf.constant(seed)).numpy()
  np.testing.assert_array_equal(crop([5, 6]), crop([5, 6]))
  assert not np.array_equal(crop([5, 6]), crop([5, 7]))


@pytest.mark.parametrize("mirror", [False, True])
def test_mirror_flips_some_train_images_only_when_enabled(mirror):
  # resize == crop: the only train-time randomness left is the mirror.
  data = make_config(resize_size=12, crop_size=12, mirror=mirror)
  image = tf.constant(np.random.default_rng(1).integers(
      0, 256, (12, 12, 3), dtype=np.uint8))
  centre = ip.caffe_preprocess(image, data=data, train=False).numpy()
  outs = [ip.caffe_preprocess(image, data=data, train=True,
                              seed=[0, s]).numpy() for s in range(16)]
  flipped = [np.array_equal(o, centre[:, ::-1]) for o in outs]
  assert all(f or np.array_equal(o, centre) for f, o in zip(flipped, outs))
  assert any(flipped) == mirror
  assert not all(flipped)


def test_mean_file_is_subtracted_at_the_crop_position(tmp_path):
  # A spatially varying mean image at resize resolution (Caffe layout
  # [3, H, W], BGR): the eval output is image - mean under the crop window.
  size, crop = 10, 6
  mean_chw = np.stack([np.arange(size * size, dtype=np.float32).reshape(
      size, size) + 10 * c for c in range(3)])
  np.save(tmp_path / "mean.npy", mean_chw)
  data = make_config(resize_size=size, crop_size=crop,
                     mean_file=str(tmp_path / "mean.npy"))
  out = ip.caffe_preprocess(tf.constant(solid((10, 20, 30), size, size)),
                            data=data, train=False).numpy()
  offset = (size - crop) // 2
  window = np.transpose(mean_chw, (1, 2, 0))[offset:offset + crop,
                                              offset:offset + crop]
  np.testing.assert_allclose(out, np.array([30., 20., 10.]) - window,
                             atol=1e-4)


def test_mean_file_of_another_size_is_resized(tmp_path):
  mean_chw = np.broadcast_to(np.array([50., 60., 70.])[:, None, None],
                             (3, 8, 8))
  np.save(tmp_path / "mean.npy", mean_chw)
  data = make_config(resize_size=16, crop_size=10,
                     mean_file=str(tmp_path / "mean.npy"))
  out = ip.caffe_preprocess(tf.constant(solid((100, 100, 100))), data=data,
                            train=False).numpy()
  np.testing.assert_allclose(out, np.broadcast_to([50., 40., 30.], out.shape),
                             atol=1e-3)
  # For display the mean image counts as its per-channel average.
  np.testing.assert_array_equal(ip.to_rgb_uint8(out, data), 100)


def test_to_rgb_uint8_inverts_eval_preprocessing():
  data = make_config(resize_size=16, crop_size=16)
  image = np.random.default_rng(2).integers(0, 256, (16, 16, 3),
                                            dtype=np.uint8)
  out = ip.caffe_preprocess(tf.constant(image), data=data, train=False)
  back = ip.to_rgb_uint8(out.numpy(), data)
  assert back.dtype == np.uint8
  assert np.abs(back.astype(int) - image).max() <= 1


def test_to_rgb_uint8_handles_any_batch_and_size_and_clips():
  data = make_config()
  images = np.zeros((2, 5, 7, 3), np.float32)
  images[0, 0, 0] = [1000., -1000., 0.4]  # B far above, G far below range.
  rgb = ip.to_rgb_uint8(images, data)
  assert rgb.shape == (2, 5, 7, 3)
  np.testing.assert_array_equal(rgb[1, 2, 3], [123, 117, 104])
  np.testing.assert_array_equal(rgb[0, 0, 0], [123, 0, 255])


# ---------------------------------------------------------------------------
# Folder source.
# ---------------------------------------------------------------------------


def test_folder_train_batches_are_shaped_and_skip_corrupt_files(image_folder):
  data = make_config(source=f"folder:{image_folder}")
  before = ip.skipped_images()
  batches = list(itertools.islice(
      ip.train_iterator(data, local_batch_size=3, seed=0), 4))
  for batch in batches:
    assert batch["image"].shape == (3, 12, 12, 3)
    assert batch["image"].dtype == np.float32
  # 12 images = 2.4 epochs of the 5 valid files: every valid file appears,
  # the corrupt one never (identify() fails on an unknown colour).
  assert set(identify(centre_colours(batches, data), ZOO_COLOURS)) == set(
      range(ZOO_SIZE))
  assert ip.skipped_images() == before + 1


def test_folder_eval_yields_each_valid_image_once(image_folder):
  data = make_config(source=f"folder:{image_folder}")
  before = ip.skipped_images()
  batches = list(ip.eval_iterator(data, local_batch_size=4))
  # 6 files listed (5 valid + 1 corrupt) -> 2 batches of 4.
  assert len(batches) == 2
  assert all(b["image"].shape == (4, 12, 12, 3) for b in batches)
  assert sum(b["mask"].sum() for b in batches) == ZOO_SIZE
  ids = identify(centre_colours(batches, data), ZOO_COLOURS)
  assert sorted(ids) == list(range(ZOO_SIZE))
  assert ip.skipped_images() == before + 1
  padded = np.concatenate([b["image"][~b["mask"]] for b in batches])
  assert np.all(padded == 0)


def test_tf_decodes_cmyk_jpeg_like_pil():
  buffer = io.BytesIO()
  Image.fromarray(solid((200, 50, 10))).convert("CMYK").save(buffer, "JPEG",
                                                              quality=95)
  decoded = tf.io.decode_image(buffer.getvalue(), channels=3).numpy()
  assert np.abs(decoded.astype(int) - [200, 50, 10]).max() <= 3


def test_flat_folder_holds_out_every_tenth_file(tmp_path):
  paths = write_flat_folder(str(tmp_path), 12)
  data = make_config(source=f"folder:{tmp_path}")
  eval_split = sorted(range(12), key=lambda i: paths[i])[::10]
  palette = distinct_colours(12)
  eval_ids = identify(
      centre_colours(ip.eval_iterator(data, local_batch_size=4), data),
      palette)
  assert sorted(eval_ids) == sorted(eval_split)
  # One epoch of training (10 files, batches of 5) is exactly the rest.
  train = itertools.islice(ip.train_iterator(data, local_batch_size=5,
                                             seed=1), 2)
  train_ids = identify(centre_colours(train, data), palette)
  assert sorted(train_ids) == sorted(set(range(12)) - set(eval_ids))


def test_eval_shards_are_disjoint_cover_the_split_and_align(tmp_path):
  paths = write_flat_folder(str(tmp_path), 50)  # eval = 5 files
  data = make_config(source=f"folder:{tmp_path}")
  palette = distinct_colours(50)
  eval_split = sorted(range(50), key=lambda i: paths[i])[::10]
  shards = [list(ip.eval_iterator(data, local_batch_size=2, process_index=i,
                                  process_count=2)) for i in range(2)]
  ids = [identify(centre_colours(s, data), palette) for s in shards]
  assert not set(ids[0]) & set(ids[1])
  assert sorted(ids[0] + ids[1]) == sorted(eval_split)
  # Shares of 3 and 2 images: both processes yield ceil(3 / 2) batches.
  assert len(shards[0]) == len(shards[1]) == ip.eval_num_batches(
      data, local_batch_size=2, process_count=2) == 2


def test_eval_num_images_caps_the_eval_split(tmp_path):
  write_flat_folder(str(tmp_path), 50)
  data = make_config(source=f"folder:{tmp_path}", eval_num_images=3)
  batches = list(ip.eval_iterator(data, local_batch_size=2))
  assert ip.eval_num_examples(data) == 3
  assert sum(b["mask"].sum() for b in batches) == 3


def test_train_shards_read_disjoint_files(tmp_path):
  write_flat_folder(str(tmp_path), 21)  # 18 train files, 9 per process
  data = make_config(source=f"folder:{tmp_path}")
  palette = distinct_colours(21)
  seen = []
  for index in range(2):
    batches = itertools.islice(ip.train_iterator(
        data, local_batch_size=3, seed=0, process_index=index,
        process_count=2), 3)
    seen.append(set(identify(centre_colours(batches, data), palette)))
  assert len(seen[0]) == len(seen[1]) == 9
  assert not seen[0] & seen[1]


# ---------------------------------------------------------------------------
# Determinism, for every kind of source.
# ---------------------------------------------------------------------------


@pytest.fixture(params=["builtin", "folder", "tfds"])
def any_source(request, tmp_path, tiny_tfds_dir) -> ml_collections.ConfigDict:
  if request.param == "builtin":
    return make_config(source="builtin:skimage")
  if request.param == "folder":
    write_flat_folder(str(tmp_path), 30)
    return make_config(source=f"folder:{tmp_path}")
  return make_config(source="inverter_tiny_photos", data_dir=tiny_tfds_dir)


def first_batches(data: ml_collections.ConfigDict, seed: int) -> np.ndarray:
  it = ip.train_iterator(data, local_batch_size=4, seed=seed)
  return np.stack([next(it)["image"] for _ in range(3)])


def test_train_stream_is_a_function_of_the_seed(any_source):
  np.testing.assert_array_equal(first_batches(any_source, 7),
                                first_batches(any_source, 7))
  assert not np.array_equal(first_batches(any_source, 7),
                            first_batches(any_source, 8))


# ---------------------------------------------------------------------------
# TFDS source.
# ---------------------------------------------------------------------------


def test_tfds_eval_shards_cover_the_capped_split(tiny_tfds_dir):
  data = make_config(source="inverter_tiny_photos", data_dir=tiny_tfds_dir,
                     eval_num_images=5)
  shards = [list(ip.eval_iterator(data, local_batch_size=2, process_index=i,
                                  process_count=2)) for i in range(2)]
  ids = [identify(centre_colours(s, data), tiny_palette()) for s in shards]
  assert not set(ids[0]) & set(ids[1])
  assert len(ids[0]) + len(ids[1]) == 5
  assert set(ids[0] + ids[1]) <= set(range(TINY_TRAIN,
                                           TINY_TRAIN + TINY_VALIDATION))
  assert len(shards[0]) == len(shards[1]) == 2


def test_tfds_train_reads_only_the_train_split(tiny_tfds_dir):
  data = make_config(source="inverter_tiny_photos", data_dir=tiny_tfds_dir)
  batches = itertools.islice(ip.train_iterator(data, local_batch_size=4,
                                               seed=0), 6)
  ids = identify(centre_colours(batches, data), tiny_palette())
  assert set(ids) == set(range(TINY_TRAIN))  # 2 epochs: all, and no others


def test_check_source_accepts_a_prepared_tfds_dataset(tiny_tfds_dir):
  data = make_config(source="inverter_tiny_photos", data_dir=tiny_tfds_dir)
  assert ip.check_source(data) == []


def test_check_source_names_a_missing_tfds_split(tiny_tfds_dir):
  data = make_config(source="inverter_tiny_photos", data_dir=tiny_tfds_dir,
                     eval_split="test")
  problems = ip.check_source(data)
  assert len(problems) == 1 and "'test'" in problems[0]


def test_mocked_tfds_imagenet_gives_shaped_batches():
  data = make_config(source="imagenet2012", data_dir="/nonexistent/tfds")
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    assert ip.check_source(data) == []  # mock_data counts as prepared.
    train = next(ip.train_iterator(data, local_batch_size=4, seed=0))
    evals = list(ip.eval_iterator(data, local_batch_size=4))
  assert train["image"].shape == (4, 12, 12, 3)
  assert [b["image"].shape for b in evals] == [(4, 12, 12, 3)] * 2
  assert sum(b["mask"].sum() for b in evals) == 6


# ---------------------------------------------------------------------------
# check_source.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("manual_dir", [None, "/data/imagenet_tars"])
def test_check_source_explains_how_to_prepare_imagenet(tmp_path, manual_dir):
  data = make_config(source="imagenet2012", data_dir=str(tmp_path),
                     manual_dir=manual_dir)
  start = time.monotonic()
  problems = ip.check_source(data)
  assert time.monotonic() - start < 30
  assert len(problems) == 1
  manual = manual_dir or os.path.join(str(tmp_path), "downloads", "manual")
  for needle in ("imagenet2012", "ILSVRC2012_img_train.tar",
                 "ILSVRC2012_img_val.tar", manual,
                 f"--data_dir={tmp_path}", f"--manual_dir={manual}",
                 "gs://", "configs/fc6.py:demo"):
    assert needle in problems[0]


def test_check_source_tells_how_to_build_other_tfds_datasets(tmp_path):
  problems = ip.check_source(make_config(source="cifar10",
                                         data_dir=str(tmp_path)))
  assert len(problems) == 1
  assert f"tfds build cifar10 --data_dir={tmp_path}" in problems[0]


def test_check_source_rejects_unknown_tfds_names():
  problems = ip.check_source(make_config(source="no_such_dataset_xyz"))
  assert len(problems) == 1 and "no_such_dataset_xyz" in problems[0]


def test_check_source_gives_up_on_a_hanging_tfds(monkeypatch):
  release = threading.Event()
  monkeypatch.setattr(tfds_source, "dataset_builder",
                      lambda data: release.wait(60))
  monkeypatch.setattr(tfds_source, "CHECK_TIMEOUT_S", 0.5)
  try:
    start = time.monotonic()
    problems = ip.check_source(make_config(source="cifar10"))
    assert time.monotonic() - start < 10
  finally:
    release.set()
  assert len(problems) == 1 and "did not answer" in problems[0]


def test_check_source_names_a_missing_folder(tmp_path):
  missing = f"{tmp_path}/nowhere"
  problems = ip.check_source(make_config(source=f"folder:{missing}"))
  assert len(problems) == 1 and missing in problems[0]


def test_check_source_names_the_split_folders_that_exist(image_folder):
  data = make_config(source=f"folder:{image_folder}", eval_split="test")
  problems = ip.check_source(data)
  assert len(problems) == 1
  assert "'test'" in problems[0] and "'validation'" in problems[0]
  with pytest.raises(ValueError, match="validation"):
    ip.eval_iterator(data, local_batch_size=2)


def test_check_source_accepts_usable_folders(image_folder):
  assert ip.check_source(make_config(source=f"folder:{image_folder}")) == []


def test_check_source_names_a_missing_mean_file(tmp_path):
  missing = f"{tmp_path}/mean.npy"
  problems = ip.check_source(make_config(mean_file=missing))
  assert len(problems) == 1 and missing in problems[0]


# ---------------------------------------------------------------------------
# Builtin scikit-image photos.
# ---------------------------------------------------------------------------


def test_check_source_accepts_builtin_skimage():
  assert ip.check_source(make_config(source="builtin:skimage")) == []


def test_builtin_train_batches_are_shaped_and_vary():
  data = make_config(source="builtin:skimage")
  it = ip.train_iterator(data, local_batch_size=6, seed=0)
  first, second = next(it)["image"], next(it)["image"]
  assert first.shape == second.shape == (6, 12, 12, 3)
  assert len({im.tobytes() for im in np.concatenate([first, second])}) == 12


def test_builtin_eval_is_fifteen_crops_of_held_out_photos():
  data = make_config(source="builtin:skimage")
  batches = list(ip.eval_iterator(data, local_batch_size=4))
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  assert len(images) == 15 == ip.eval_num_examples(data)
  assert len({im.tobytes() for im in images}) == 15
  capped = make_config(source="builtin:skimage", eval_num_images=4)
  assert sum(b["mask"].sum()
             for b in ip.eval_iterator(capped, local_batch_size=4)) == 4


# ---------------------------------------------------------------------------
# Stream positions: exact continuation (what a resumed trainer relies on).
# ---------------------------------------------------------------------------


def stream(data, *, batches, batch=4, start=0, index=0, count=1):
  return list(itertools.islice(ip.train_iterator(
      data, local_batch_size=batch, seed=5, process_index=index,
      process_count=count, start=start), batches))


def test_every_batch_says_where_its_examples_sit_in_the_stream(any_source):
  batches = stream(any_source, batches=4)
  positions = np.concatenate([b[ip.POSITION] for b in batches])
  assert positions.dtype == np.int64
  assert np.all(np.diff(positions) > 0) and positions[0] == 0


def test_starting_after_a_batch_continues_the_stream_exactly(any_source):
  """Across epoch ends too: the TFDS split has 12 examples, batches of 4
  from position 7 cross two of them."""
  full = stream(any_source, batches=9)
  cut = 3
  resumed = stream(any_source, batches=6,
                   start=int(full[cut - 1][ip.POSITION][-1]) + 1)
  for expected, got in zip(full[cut:], resumed):
    np.testing.assert_array_equal(got[ip.POSITION], expected[ip.POSITION])
    np.testing.assert_array_equal(got["image"], expected["image"])


def test_a_resumed_epoch_neither_repeats_nor_skips_an_example(tmp_path):
  """One epoch of 18 files, interrupted after 2 of its batches of 3 and
  resumed: every file exactly once."""
  write_flat_folder(str(tmp_path), 20)  # 18 train files
  data = make_config(source=f"folder:{tmp_path}")
  palette = distinct_colours(20)
  first = stream(data, batches=2, batch=3)
  rest = stream(data, batches=4, batch=3,
                start=int(first[-1][ip.POSITION][-1]) + 1)
  ids = identify(centre_colours(first + rest, data), palette)
  assert len(ids) == len(set(ids)) == 18


def test_corrupt_files_do_not_shift_the_resumed_stream(image_folder):
  """image_folder holds one undecodable file, dropped wherever it falls."""
  data = make_config(source=f"folder:{image_folder}")
  full = stream(data, batches=8, batch=3)
  resumed = stream(data, batches=5, batch=3,
                   start=int(full[2][ip.POSITION][-1]) + 1)
  for expected, got in zip(full[3:], resumed):
    np.testing.assert_array_equal(got["image"], expected["image"])
  gaps = np.diff(np.concatenate([b[ip.POSITION] for b in full]))
  assert gaps.max() == 2  # the skipped positions are the corrupt file's


@pytest.mark.parametrize("source", ["folder", "builtin"])
def test_processes_share_one_global_stream(source, tmp_path):
  """Batch k of 2 processes (2 examples each) holds exactly the examples of
  batch k of 1 process (4 examples): results do not depend on the process
  count."""
  if source == "folder":
    write_flat_folder(str(tmp_path), 30)
    data = make_config(source=f"folder:{tmp_path}")
  else:
    data = make_config(source="builtin:skimage")
  single = stream(data, batches=6)
  shares = [stream(data, batches=6, batch=2, index=i, count=2)
            for i in range(2)]
  for k, whole in enumerate(single):
    joined = np.concatenate([shares[0][k]["image"], shares[1][k]["image"]])
    assert sorted(map(bytes, joined)) == sorted(map(bytes, whole["image"]))


def test_tfds_shares_continue_exactly_per_process(tiny_tfds_dir):
  data = make_config(source="inverter_tiny_photos", data_dir=tiny_tfds_dir)
  for index in range(2):
    full = stream(data, batches=5, batch=2, index=index, count=2)
    resumed = stream(data, batches=3, batch=2, index=index, count=2,
                     start=int(full[1][ip.POSITION][-1]) + 1)
    for expected, got in zip(full[2:], resumed):
      np.testing.assert_array_equal(got["image"], expected["image"])


def test_a_capped_folder_eval_split_samples_every_class(tmp_path):
  """ImageFolder layout sorts by class: the first 4 files would all be of
  class a; a capped eval split spreads over the sorted list instead."""
  for cls, colour in zip("abcd", distinct_colours(4)):
    for i in range(5):
      save(f"{tmp_path}/validation/{cls}/{i}.png", solid(colour))
      save(f"{tmp_path}/train/{cls}/{i}.png", solid(colour))
  data = make_config(source=f"folder:{tmp_path}", eval_num_images=4)
  ids = identify(centre_colours(ip.eval_iterator(data, local_batch_size=4),
                                data), distinct_colours(4))
  assert sorted(ids) == [0, 1, 2, 3]
  assert ip.eval_num_examples(data) == 4


def test_folder_eval_batches_mix_the_classes(tmp_path):
  """The normalized error compares images within a batch; batches of one
  class each (sorted ImageFolder order) would bias it against TFDS's
  shuffled splits. 4 classes x 8 images in batches of 8."""
  colours = distinct_colours(4)
  for cls, colour in zip("abcd", colours):
    for i in range(8):
      save(f"{tmp_path}/validation/{cls}/{i}.png", solid(colour))
    save(f"{tmp_path}/train/{cls}/0.png", solid(colour))
  data = make_config(source=f"folder:{tmp_path}")
  batches = list(ip.eval_iterator(data, local_batch_size=8))
  per_batch = [sorted(set(identify(centre_colours([b], data), colours)))
               for b in batches]
  assert len(per_batch) == 4 and all(len(ids) >= 2 for ids in per_batch)
  # Still every image once, in an order fixed for every run.
  ids = identify(centre_colours(batches, data), colours)
  assert sorted(ids) == sorted(list(range(4)) * 8)
  again = identify(centre_colours(
      ip.eval_iterator(data, local_batch_size=8), data), colours)
  assert again == ids
