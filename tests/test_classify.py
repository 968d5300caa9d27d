"""Specification tests for encoder training (inverter.classify) and labels in
the input pipeline.

Data are tiny generated ImageFolder trees whose classes have distinct solid
colours, so a label can be checked against the image it came with, and a
classifier has something trivially learnable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from inverter import classify, encoder_weights
from inverter import data as ip
from inverter import preflight, presets, train, training_loop
from inverter.models import encoders

from conftest import REPO_ROOT

# Class folder name -> RGB colour; deliberately not created in sorted order.
COLOURS = {"zebra": (240, 240, 240), "apple": (220, 30, 30),
           "mango": (250, 160, 20), "blue_jay": (20, 40, 220)}


def load_config(name: str, arg: str) -> ml_collections.ConfigDict:
  """configs/encoders/<name>.py:<arg>, as --config= loads it."""
  spec = importlib.util.spec_from_file_location(
      f"encoder_config_{name}", REPO_ROOT / "configs" / "encoders" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def write_image_folder(root, colours, n_train: int, n_eval: int,
                       size: int = 12, seed: int = 0) -> None:
  """root/train/<class>/*.png and root/test/<class>/*.png: noisy solid
  colours (noise keeps images of one class from being identical)."""
  rng = np.random.default_rng(seed)
  for split, n in (("train", n_train), ("test", n_eval)):
    for name, rgb in colours.items():
      os.makedirs(root / split / name, exist_ok=True)
      for i in range(n):
        noise = rng.integers(-8, 9, (size, size, 3))
        pixels = np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / split / name / f"{i:03d}.png")


def data_config(source: str, **overrides) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict(dict(
      source=source, data_dir=None, manual_dir=None, train_split="train",
      eval_split="test", resize_size=8, crop_size=8, mirror=True,
      mean=(100.0, 110.0, 120.0), mean_file=None, shuffle_buffer=16,
      num_parallel_calls=-1, prefetch=2, eval_num_images=-1,
      builtin_scales=(0.2, 1.0)))
  data.update(overrides)
  return data


def class_of_colour(images: np.ndarray, data, names) -> list[str]:
  """The class whose colour is nearest to each image's centre pixel."""
  rgb = ip.to_rgb_uint8(images, data).astype(int)
  centre = rgb[:, rgb.shape[1] // 2, rgb.shape[2] // 2]
  palette = np.array([COLOURS[n] for n in names])
  return [names[int(np.abs(palette - c).sum(1).argmin())] for c in centre]


# ---------------------------------------------------------------------------
# Labels in the input pipeline.
# ---------------------------------------------------------------------------


def test_folder_labels_are_the_sorted_class_folder_index(tmp_path):
  write_image_folder(tmp_path, COLOURS, n_train=3, n_eval=2)
  data = data_config(f"folder:{tmp_path}")
  names = ip.label_names(data)
  assert names == sorted(COLOURS)
  assert ip.check_source(data, with_labels=True) == []
  train_batch = next(ip.train_iterator(data, local_batch_size=12, seed=0,
                                       with_labels=True))
  assert train_batch["label"].dtype == np.int32
  assert [names[l] for l in train_batch["label"]] == class_of_colour(
      train_batch["image"], data, names)
  seen = []
  for batch in ip.eval_iterator(data, local_batch_size=3, with_labels=True):
    mask = batch["mask"]
    assert [names[l] for l in batch["label"][mask]] == class_of_colour(
        batch["image"][mask], data, names)
    seen += list(batch["label"][mask])
  assert sorted(seen) == sorted([0, 1, 2, 3] * 2)


def test_cifar10_folder_order_is_tfds_label_order(tmp_path):
  tfds_names = tfds.builder("cifar10").info.features["label"].names
  write_image_folder(tmp_path, {n: (i * 20, 0, 0) for i, n in
                                enumerate(reversed(tfds_names))}, 1, 1)
  assert ip.label_names(data_config(f"folder:{tmp_path}")) == tfds_names


def test_tfds_labels_come_from_the_label_feature(tmp_path):
  # The tiny dataset of test_data_pipeline: record i has colour palette[i]
  # and label i % 2.
  import test_data_pipeline as tip  # pylint: disable=g-import-not-at-top
  tfds.builder("inverter_tiny_photos", data_dir=str(tmp_path)
               ).download_and_prepare(file_format="tfrecord")
  data = data_config("inverter_tiny_photos", data_dir=str(tmp_path),
                     eval_split="validation", mean=tip.MEAN_BGR)
  assert ip.label_names(data) == ["0", "1"]
  batches = list(ip.eval_iterator(data, local_batch_size=4, with_labels=True))
  ids = tip.identify(tip.centre_colours(batches, data), tip.tiny_palette())
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  assert list(labels) == [i % 2 for i in ids]
  assert sorted(ids) == list(range(tip.TINY_TRAIN,
                                   tip.TINY_TRAIN + tip.TINY_VALIDATION))
  train_batch = next(ip.train_iterator(data, local_batch_size=6, seed=1,
                                       with_labels=True))
  ids = tip.identify(tip.centre_colours([train_batch], data),
                     tip.tiny_palette())
  assert list(train_batch["label"]) == [i % 2 for i in ids]


def test_sources_without_labels_are_refused_with_the_fix(tmp_path):
  for i, rgb in enumerate(COLOURS.values()):
    Image.fromarray(np.full((8, 8, 3), rgb, np.uint8)).save(
        tmp_path / f"{i}.png")
  for source in (f"folder:{tmp_path}", "builtin:skimage"):
    data = data_config(source)
    problems = ip.check_source(data, with_labels=True)
    assert len(problems) == 1 and "no labels" in problems[0]
    assert "<class>" in problems[0]
    with pytest.raises(ValueError, match="no labels"):
      next(ip.train_iterator(data, local_batch_size=2, seed=0,
                             with_labels=True))
    # Without labels the same source still works.
    assert ip.check_source(data) == []


def test_crop_padding_translates_and_pads_with_the_mean_colour():
  data = data_config("builtin:skimage", resize_size=6, crop_size=6,
                     mirror=False, crop_padding=2)
  image = np.random.default_rng(0).integers(0, 256, (6, 6, 3), np.uint8)
  centred = ip.caffe_preprocess(tf.constant(image), data=data,
                                train=False).numpy()
  padded = np.pad(centred, ((2, 2), (2, 2), (0, 0)))
  offsets = set()
  for s in range(40):
    out = ip.caffe_preprocess(tf.constant(image), data=data, train=True,
                              seed=[0, s]).numpy()
    match = [(y, x) for y in range(5) for x in range(5)
             if np.array_equal(out, padded[y:y + 6, x:x + 6])]
    assert match, "a training crop must be a window of the padded image"
    offsets.add(match[0])
  assert len(offsets) > 5  # Really translated, in both directions.
  assert {y for y, _ in offsets} >= {0, 4} or {x for _, x in offsets} >= {0, 4}


# ---------------------------------------------------------------------------
# Metrics, schedule, checks.
# ---------------------------------------------------------------------------


def test_topk_correct_on_hand_made_logits():
  logits = jnp.array([[0., 9., 1.],   # label 1 is the top class
                      [3., 1., 2.],   # label 2 is second
                      [0., 0., 0.],   # all tied: counts against the label
                      [1., 5., 5.]])  # tied for first with another class
  labels = jnp.array([1, 2, 0, 2])
  correct = classify.topk_correct(logits, labels, ks=(1, 2, 3))
  assert correct[1].tolist() == [True, False, False, False]
  assert correct[2].tolist() == [True, True, False, True]
  assert correct[3].tolist() == [True, True, True, True]


def test_caffenet_recipe_steps_the_learning_rate_like_caffe():
  config = load_config("caffenet_imagenet", "")
  assert (config.batch_size, config.num_train_steps) == (256, 450_000)
  assert config.optimizer.weight_decay == 5e-4
  assert config.optimizer.momentum == 0.9
  assert (config.data.resize_size, config.data.crop_size) == (256, 227)
  schedule = classify.learning_rate_schedule(config)
  for step, lr in [(0, 0.01), (99_999, 0.01), (100_000, 0.001),
                   (399_999, 1e-5), (449_999, 1e-6)]:
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-5)


@pytest.mark.parametrize("name", ["caffenet_imagenet", "cifar10"])
def test_encoder_configs_pass_their_checks_on_their_tfds_data(name):
  config = load_config(name, "")
  assert config.task == classify.TASK
  with tfds.testing.mock_data(num_examples=4,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    classify.check(config)  # Labels exist and match encoder.num_classes.


def test_the_tiny_imagenet_encoder_config_is_the_published_encoder_s():
  # The published encoder (docs/results/tiny_imagenet/encoder) was trained
  # from this config; a change here would make its stage irreproducible.
  config = load_config("tiny_imagenet", "")
  published = json.loads((REPO_ROOT / "docs" / "results" / "tiny_imagenet"
                          / "encoder" / "metadata.json").read_text())
  assert encoder_weights.architecture(config.encoder) == (
      published["architecture"])
  recipe = published["source"]["config"]
  for key in ("num_train_steps", "eval_every_steps", "batch_size", "seed",
              "input_scale"):
    assert config[key] == recipe[key], key
  as_json = lambda d: json.loads(json.dumps(d))  # tuples -> lists
  assert as_json(config.optimizer.to_dict()) == recipe["optimizer"]
  data = as_json(config.data.to_dict())
  for key in ("train_split", "eval_split", "crop_size", "mirror", "mean",
              "crop_padding", "shuffle_buffer"):
    assert data[key] == recipe["data"][key], key


@pytest.mark.parametrize("arch", presets.SMALL_ENCODER_ARCHS)
def test_every_family_has_one_reduced_network_for_training_and_inverting(
    arch):
  config = load_config("tiny_imagenet", f"arch={arch}")
  assert config.encoder.arch == arch
  assert (config.encoder.input_size, config.encoder.num_classes) == (64, 200)
  architecture = encoder_weights.architecture(config.encoder)
  # Every inverter config of the family describes the same network, so a
  # trained encoder's weights fit any of its layers.
  for layer in encoders.layers_of(arch):
    inverter = presets.get_config(layer, f"tiny_imagenet,arch={arch}")
    assert encoder_weights.architecture(inverter.encoder) == architecture
  model = encoders.from_config(config.encoder)
  shapes = encoders.tap_shapes(model)
  taps = [shapes[encoders.default_tap(arch, layer)]
          for layer in encoders.layers_of(arch)]
  # The maps shrink with depth, down to the 200 class scores.
  sides = [shape[0] for shape in taps if len(shape) == 3]
  assert sides == sorted(sides, reverse=True) and sides[-1] < 64 // 8
  assert taps[-1] == (200,)
  assert not classify.config_problems(config)


@pytest.mark.parametrize("arch", ["caffenet", "vgg16"])
def test_the_first_convolution_strides_so_tiny_imagenet_maps_match_cifar(
    arch):
  shapes = {dataset: encoders.tap_shapes(encoders.from_config(
      load_config(dataset, f"arch={arch}").encoder))
            for dataset in ("cifar10", "tiny_imagenet")}
  pool5 = {dataset: shape["pool5"][:2] for dataset, shape in shapes.items()}
  assert pool5["cifar10"] == pool5["tiny_imagenet"]
  assert load_config("tiny_imagenet", f"arch={arch}").encoder.conv1_stride == 2


def test_a_family_without_a_reduced_network_is_refused():
  with pytest.raises(ValueError, match="arch=alexnet has no reduced"):
    load_config("tiny_imagenet", "arch=alexnet")


def test_every_reduced_network_has_its_tiny_imagenet_epochs():
  spec = importlib.util.spec_from_file_location(
      "tiny_imagenet_encoder",
      REPO_ROOT / "configs" / "encoders" / "tiny_imagenet.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert set(module.EPOCHS) == set(presets.SMALL_ENCODER_ARCHS)


def test_wrong_number_of_classes_is_refused_before_any_work(tmp_path):
  write_image_folder(tmp_path / "data", COLOURS, 1, 1)
  config = load_config("cifar10", f"test,source=folder:{tmp_path / 'data'}")
  with pytest.raises(preflight.PreflightError,
                     match="--config.encoder.num_classes=4"):
    classify.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_batch_not_divisible_by_the_devices_is_a_config_problem():
  config = load_config("cifar10", "test")
  config.batch_size = 12  # The suite runs on 8 virtual devices.
  assert any("batch_size=12 must be a positive multiple" in p
             for p in classify.config_problems(config))


# ---------------------------------------------------------------------------
# Training runs.
# ---------------------------------------------------------------------------


def tiny_config(source: str, num_classes: int, **overrides):
  config = load_config("cifar10", f"test,source={source}")
  config.encoder.num_classes = num_classes
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


TWO_COLOUR_STEPS = 12


@pytest.fixture(scope="module")
def two_colour_run(tmp_path_factory):
  """One training run on red vs blue images, shared by the tests below:
  (data folder, workdir, final metrics)."""
  root = tmp_path_factory.mktemp("two_colours")
  write_image_folder(root / "data", {"red": (220, 30, 30),
                                     "blue": (20, 40, 220)},
                     n_train=16, n_eval=8)
  config = tiny_config(f"folder:{root / 'data'}", 2,
                       num_train_steps=TWO_COLOUR_STEPS,
                       checkpoint_every_steps=6, eval_every_steps=100)
  metrics = classify.train_and_evaluate(config, str(root / "run"))
  return root / "data", root / "run", metrics


def test_training_separates_two_colours(two_colour_run):
  _, workdir, metrics = two_colour_run
  assert metrics["num_images"] == 16 and metrics["step"] == TWO_COLOUR_STEPS
  assert metrics["top1"] >= 0.9
  # Cross-entropy at chance level is ln 2 = 0.69.
  assert metrics["loss"] < 0.5 * np.log(2)
  saved = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert saved["top1"] == metrics["top1"] and saved["loss"] == metrics["loss"]


@pytest.mark.parametrize("arch", ["resnet50", "vgg16"])
def test_batch_norm_networks_train_and_export_calibrated_statistics(
    tmp_path, arch):
  write_image_folder(tmp_path / "data", {"red": (220, 30, 30),
                                         "blue": (20, 40, 220)},
                     n_train=16, n_eval=8, size=32)
  config = tiny_config(f"folder:{tmp_path / 'data'}", 2,
                       num_train_steps=20, eval_every_steps=100)
  config.encoder = presets.get_config("conv1", f"test,arch={arch}").encoder
  config.encoder.num_classes = 2
  if arch == "vgg16":  # As the reduced VGG of the small data sets.
    config.encoder.batch_norm = True
  config.data.mean = presets.get_config("conv1", f"test,arch={arch}").data.mean
  config.input_scale = 1.0  # these normalise their own input
  metrics = classify.train_and_evaluate(config, str(tmp_path / "run"))
  # Trained from the batches' statistics, evaluated with calibrated ones
  # (chance is 0.5).
  assert metrics["top1"] >= 0.8
  exported = ocp.StandardCheckpointer().restore(
      (tmp_path / "run" / classify.ENCODER_DIR / "params").resolve())
  flat = {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(exported)}
  means = [v for k, v in flat.items() if k.endswith("['mean']")]
  variances = [v for k, v in flat.items() if k.endswith("['var']")]
  assert means and len(means) == len(variances)
  # Not the initial 0 / 1: every layer's statistics were set from data.
  assert all(np.abs(m).max() > 0 for m in means)
  assert all(np.abs(v - 1).max() > 1e-3 and v.min() >= 0 for v in variances)


def test_rerun_resumes_from_the_last_checkpoint(two_colour_run, tmp_path,
                                                monkeypatch):
  data, finished, _ = two_colour_run
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  # The exported encoder holds the params of the last checkpoint.
  exported = ocp.StandardCheckpointer().restore(
      (workdir / classify.ENCODER_DIR / "params").resolve())
  seen = {}
  original = training_loop._loop

  def spy(config_, state, start_step, *args):
    seen["start"] = start_step
    seen["params"] = jax.tree.map(np.asarray, state.params)
    return original(config_, state, start_step, *args)

  monkeypatch.setattr(training_loop, "_loop", spy)
  longer = tiny_config(f"folder:{data}", 2,
                       num_train_steps=TWO_COLOUR_STEPS + 2)
  assert classify.train_and_evaluate(longer, str(workdir))["step"] == (
      TWO_COLOUR_STEPS + 2)
  assert seen["start"] == TWO_COLOUR_STEPS
  jax.tree.map(np.testing.assert_array_equal, seen["params"],
               jax.tree.map(np.asarray, exported))
  # A workdir of another network is refused before any work.
  monkeypatch.setattr(training_loop, "_loop",
                      lambda *a: pytest.fail("trained"))
  with pytest.raises(train.WorkdirMismatchError, match="fc_width"):
    classify.train_and_evaluate(
        tiny_config(f"folder:{data}", 2, **{"encoder.fc_width": 32}),
        str(workdir))


def run_cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "inverter.main", *args],
                        cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def test_exported_encoder_drives_an_inverter(tmp_path):
  # Ten classes, as the inverter's `test` preset has num_classes=10.
  colours = {f"c{i}": (25 * i, 255 - 25 * i, (80 * i) % 256)
             for i in range(10)}
  write_image_folder(tmp_path / "data", colours, n_train=2, n_eval=1)
  workdir = tmp_path / "encoder_run"
  proc = run_cli(f"--config=configs/encoders/cifar10.py:test,source=folder:"
                 f"{tmp_path / 'data'}", f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "top-1 accuracy" in proc.stdout
  exported = workdir / classify.ENCODER_DIR
  assert f"configs/fc6.py:encoder={exported}" in proc.stderr
  meta = json.loads((exported / "metadata.json").read_text())
  assert meta["source"]["step"] == 6
  assert meta["source"]["top1"] == json.loads(
      (workdir / "eval" / "metrics.json").read_text())["top1"]
  assert meta["source"]["label_names"] == sorted(colours)

  inverter_config = presets.get_config("conv1", "test")
  inverter_config.encoder.weights = str(exported)
  params = encoder_weights.load(
      inverter_config.encoder, encoders.from_config(inverter_config.encoder))
  trained = ocp.StandardCheckpointer().restore(
      (workdir / "checkpoints" / "6" / "state").resolve())["params"]
  jax.tree.map(np.testing.assert_array_equal, params,
               jax.tree.map(np.asarray, trained))

  # The exported directory alone configures the inverter's encoder.
  proc = run_cli(f"--config=configs/conv1.py:test,encoder={exported}",
                 f"--workdir={tmp_path / 'inverter'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads(
      (tmp_path / "inverter" / "eval" / "metrics.json").read_text())
  assert metrics["step"] == 4 and metrics["encoder_weights"] == str(exported)
