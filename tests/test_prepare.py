"""`python -m inverter.prepare tiny_imagenet`: the official Tiny ImageNet
layout becomes a prepared TFDS data set that TFDS and the project's data
pipeline read like any other, with every JPEG's bytes unchanged.

The last tiny_imagenet test rebuilds part of the shared prepared copy
(../shared/data/tfds/tiny_imagenet, which CI always has) from an official
layout written from its own examples, and requires the same examples. The
`<source>_warped` tests use TFDS mock ImageNet and the shared ImageNet
sample photographs (../shared/data/imagenet-sample).
"""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from conftest import REPO_ROOT
from inverter import data as data_lib
from inverter import presets
from inverter.prepare import tiny_imagenet, warped

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_TFDS = SHARED / "tfds"
WNIDS = ("n01443537", "n01629819", "n02123045")
# scikit-image's colour photographs.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "retina")


def jpeg_bytes(seed: int, gray: bool = False) -> bytes:
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, (64, 64) if gray else (64, 64, 3), np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="JPEG", quality=90)
  return out.getvalue()


def write_official_tree(root: pathlib.Path, train: dict[str, dict[int, bytes]],
                        val: list[tuple[str, str, bytes]],
                        words: dict[str, str]) -> pathlib.Path:
  """The unpacked zip's layout: wnids.txt, words.txt, train/<wnid>/images/,
  <wnid>_boxes.txt, val/images/, val/val_annotations.txt."""
  src = root / "tiny-imagenet-200"
  (src / "val" / "images").mkdir(parents=True)
  (src / "wnids.txt").write_text("".join(f"{w}\n" for w in train))
  (src / "words.txt").write_text(
      "".join(f"{w}\t{n}\n" for w, n in words.items()) + "n00000001\tentity\n")
  for wnid, images in train.items():
    folder = src / "train" / wnid / "images"
    folder.mkdir(parents=True)
    (src / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    for number, data in images.items():
      (folder / f"{wnid}_{number}.JPEG").write_bytes(data)
  lines = []
  for name, wnid, data in val:
    (src / "val" / "images" / name).write_bytes(data)
    lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
  (src / "val" / "val_annotations.txt").write_text("".join(lines))
  return src


@pytest.fixture
def small_tree(tmp_path):
  train = {w: {i: jpeg_bytes(10 * c + i, gray=(i == 1)) for i in range(5)}
           for c, w in enumerate(WNIDS)}
  val = [(f"val_{i}.JPEG", WNIDS[i % 3], jpeg_bytes(100 + i))
         for i in range(6)]
  words = {w: f"class {c}" for c, w in enumerate(WNIDS)}
  return write_official_tree(tmp_path, train, val, words), train, val


def examples(data_dir, split) -> dict[str, tuple[str, bytes]]:
  """file_name -> (wnid, JPEG bytes as stored) of a prepared split."""
  builder = tfds.builder("tiny_imagenet", data_dir=str(data_dir))
  names = builder.info.features["label"].names
  ds = builder.as_dataset(split=split, decoders={
      "image": tfds.decode.SkipDecoding()})
  return {ex["file_name"].decode(): (names[ex["label"]], ex["image"])
          for ex in tfds.as_numpy(ds)}


def test_builds_both_splits_with_the_original_bytes(small_tree, tmp_path):
  src, train, val = small_tree
  out = tmp_path / "tfds"
  tiny_imagenet.prepare(str(src), str(out), train_per_class=3)
  train_split = examples(out, "train")
  assert train_split == {f"{w}_{i}.JPEG": (w, train[w][i])
                         for w in WNIDS for i in range(3)}
  assert examples(out, "validation") == {
      name: (wnid, data) for name, wnid, data in val}
  assert (out / "tiny_imagenet" / "wnid_words.tsv").read_text() == (
      "n01443537\tclass 0\nn01629819\tclass 1\nn02123045\tclass 2\n")


def test_the_pipeline_reads_it_as_data_source_tiny_imagenet(small_tree,
                                                            tmp_path):
  src, _, val = small_tree
  out = tmp_path / "tfds"
  tiny_imagenet.prepare(str(src), str(out), train_per_class=3)
  config = presets.get_config("conv1", "tiny_imagenet")
  config.data.data_dir = str(out)
  assert data_lib.check_source(config.data) == []
  assert data_lib.label_names(config.data) == list(WNIDS)
  batches = list(data_lib.eval_iterator(config.data, local_batch_size=6))
  assert sum(int(b["mask"].sum()) for b in batches) == len(val)
  assert batches[0]["image"].shape == (6, 64, 64, 3)
  # A grayscale JPEG (image 1 of each class) decodes to 3 equal channels.
  train = next(data_lib.train_iterator(config.data, local_batch_size=9,
                                       seed=0))
  assert train["image"].shape == (9, 64, 64, 3)


@pytest.mark.parametrize("breakage,message", [
    (lambda src: (src / "val" / "val_annotations.txt").unlink(),
     r"val_annotations.txt is missing: --src must be the unpacked"),
    (lambda src: (src / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG n01443537 0 0 63 63\n"),
     r"val_annotations.txt, line 1: expected 'FILE<tab>WNID<tab>box'"),
    (lambda src: (src / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn01443537\t0\t0\t63\t63\nval_1.JPEG\tn09999999\t0\n"),
     r"line 2: .* one of the 3 classes; got 'val_1.JPEG\\tn09999999"),
    (lambda src: (src / "val" / "images" / "val_4.JPEG").unlink(),
     r"line 5: .*val_4.JPEG does not exist"),
    (lambda src: (src / "train" / WNIDS[1] / "images" /
                  f"{WNIDS[1]}_2.JPEG").unlink(),
     rf"lacks {WNIDS[1]}_2.JPEG .* of the 3 images per class"),
    (lambda src: (src / "wnids.txt").write_text("n01443537\n"),
     r"folders not in wnids.txt \['n01629819', 'n02123045'\]"),
])
def test_a_broken_source_is_refused_before_anything_is_written(
    small_tree, tmp_path, breakage, message):
  src, _, _ = small_tree
  breakage(src)
  out = tmp_path / "tfds"
  with pytest.raises(tiny_imagenet.SourceError, match=message):
    tiny_imagenet.prepare(str(src), str(out), train_per_class=3)
  assert not (out / "tiny_imagenet").exists()


def test_command_line_prepares_and_refuses_with_status_2(small_tree,
                                                         tmp_path):
  src, _, _ = small_tree
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  command = [sys.executable, "-m", "inverter.prepare", "tiny_imagenet",
             f"--src={src}", "--train_per_class=4"]
  proc = subprocess.run([*command, f"--data_dir={tmp_path / 'ok'}"],
                        cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "train 12, validation 6" in proc.stdout
  assert "--config.data.source=tiny_imagenet" in proc.stdout
  (src / "val" / "val_annotations.txt").unlink()
  proc = subprocess.run([*command, f"--data_dir={tmp_path / 'bad'}"],
                        cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2
  assert "ERROR:" in proc.stderr and "val_annotations.txt" in proc.stderr
  assert "Traceback" not in proc.stderr
  # A warped copy of a data set that is not prepared there.
  proc = subprocess.run(
      [sys.executable, "-m", "inverter.prepare", "imagenet2012_warped",
       f"--data_dir={tmp_path / 'none'}"], cwd=REPO_ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "imagenet2012" in proc.stderr and "Traceback" not in proc.stderr
  assert not (tmp_path / "none" / "imagenet2012_warped").exists()


@pytest.mark.skipif(not (SHARED_TFDS / "tiny_imagenet").is_dir(),
                    reason=f"shared data not found at {SHARED_TFDS}")
def test_rebuilding_part_of_the_shared_copy_gives_the_same_examples(tmp_path):
  shared_train = examples(SHARED_TFDS, "train")
  shared_val = examples(SHARED_TFDS, "validation")
  wnids = sorted({w for w, _ in shared_train.values()})[:4]
  train = {w: {} for w in wnids}
  for name, (wnid, data) in shared_train.items():
    if wnid in train:
      train[wnid][int(name[len(wnid) + 1:-len(".JPEG")])] = data
  for wnid in wnids:  # The official release has 500 per class.
    assert sorted(train[wnid]) == list(range(300))
    train[wnid].update({i: jpeg_bytes(i) for i in (300, 301, 499)})
  val = [(name, wnid, data) for name, (wnid, data) in shared_val.items()
         if wnid in train]
  src = write_official_tree(tmp_path, train, val, {w: w for w in wnids})
  out = tmp_path / "tfds"
  tiny_imagenet.prepare(str(src), str(out), train_per_class=300)
  assert examples(out, "train") == {
      name: ex for name, ex in shared_train.items() if ex[0] in train}
  assert examples(out, "validation") == {
      name: ex for name, ex in shared_val.items() if ex[0] in train}


def test_warped_examples_of_mock_imagenet_keep_label_and_name():
  # TFDS mock data: the ImageNet code path (mock images are random noise,
  # and undecoded ones differ from decoded ones, so pixels are checked on
  # real photographs below).
  with tfds.testing.mock_data(num_examples=4):
    source = tfds.builder("imagenet2012")
    builder = warped.builder_class("imagenet2012")(
        source=source, splits=["train"], data_dir="/nonexistent")
    examples = dict(builder._generate_examples("train"))  # pylint: disable=protected-access
    originals = list(tfds.as_numpy(source.as_dataset(split="train")))
  assert len(examples) == 4
  for (key, example), original in zip(sorted(examples.items()), originals):
    assert example["file_name"] == original["file_name"].decode()
    assert key.endswith(example["file_name"])
    assert example["label"] == original["label"]
    assert tf.io.decode_jpeg(example["image"]).shape == (256, 256, 3)


def test_a_warped_copy_feeds_the_pipeline_the_same_crops(tmp_path):
  # Six colour photographs bundled with scikit-image, at their own sizes,
  # as JPEGs of a TFDS ImageFolder data set (pixels need real photographs:
  # noise does not survive JPEG).
  folder = tmp_path / "photos"
  (folder / "train" / "photos").mkdir(parents=True)
  for name in PHOTOS:
    Image.fromarray(getattr(skimage.data, name)()).save(
        folder / "train" / "photos" / f"{name}.JPEG", quality=95)
  source = tfds.folder_dataset.ImageFolder(str(folder))
  built = warped.prepare(str(tmp_path / "tfds"), source=source,
                         splits=("train",))
  assert built.name == "image_folder_warped"
  assert built.info.splits["train"].num_examples == len(PHOTOS)
  # Centre crops of the warped copy, as an evaluation reads them ...
  config = presets.get_config("fc6")
  data = config.data.copy_and_resolve_references()
  data.source, data.data_dir = "image_folder_warped", str(tmp_path / "tfds")
  data.eval_split, data.eval_num_images = "train", -1
  batches = list(data_lib.eval_iterator(data, local_batch_size=8))
  crops = np.concatenate([b["image"][b["mask"]] for b in batches])
  assert crops.shape == (len(PHOTOS), 227, 227, 3)
  # ... are those of the original photographs warped at run time.
  names = [ex["file_name"].decode() for ex in tfds.as_numpy(
      built.as_dataset(split="train", shuffle_files=False))]
  originals = np.stack([data_lib.caffe_preprocess(
      tf.io.decode_jpeg((folder / "train" / "photos" / name).read_bytes(),
                        channels=3), data=config.data, train=False).numpy()
                        for name in names])
  assert np.abs(crops - originals).mean() < 3  # uint8 and JPEG, 0-255 scale
