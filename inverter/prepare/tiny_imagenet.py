"""Tiny ImageNet as a prepared TFDS data set, built from the official files.

Tiny ImageNet (Stanford CS231n, http://cs231n.stanford.edu/tiny-imagenet-200.zip)
has 200 ImageNet classes at 64x64. The unpacked zip holds

  tiny-imagenet-200/
    wnids.txt                         the 200 WordNet ids
    words.txt                         WordNet id -> class names (all of WordNet)
    train/<wnid>/images/<wnid>_<i>.JPEG   i = 0..499
    val/images/val_<i>.JPEG               i = 0..9999
    val/val_annotations.txt           file, wnid, box (tab-separated)

The builder writes TFDS `tiny_imagenet` version 1.0.0 with the splits
`train` (the images numbered below `train_per_class` of every class, all 500
by default) and `validation` (the labelled validation images), and the
features `image` (the original JPEG bytes, unchanged; grayscale files decode
to 3 channels), `label` (ClassLabel over the sorted WordNet ids) and
`file_name`. Beside the version folder it writes `wnid_words.tsv` (WordNet id
and class names). The `test` split of the zip has no labels and is skipped.
"""

from __future__ import annotations

import os
import re
from typing import Iterator

import tensorflow_datasets as tfds
from etils import epath

from inverter import errors

NAME = "tiny_imagenet"
IMAGE_SIZE = 64
TRAIN_PER_CLASS = 500
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TRAIN_FILE = re.compile(r"^(n\d{8})_(\d+)\.JPEG$")


class SourceError(errors.UserError, ValueError):
  """The source folder is not the official Tiny ImageNet layout."""


def _read_lines(path: epath.Path, what: str) -> list[str]:
  if not path.exists():
    raise SourceError(
        f"{path} is missing: --src must be the unpacked tiny-imagenet-200"
        f" folder of {URL} ({what}).")
  return path.read_text().splitlines()


def class_ids(src: epath.Path) -> list[str]:
  """The sorted WordNet ids: wnids.txt, checked against train/'s folders."""
  wnids = sorted(line.strip() for line in _read_lines(
      src / "wnids.txt", "the list of class ids") if line.strip())
  train = src / "train"
  if not train.is_dir():
    raise SourceError(f"{train} is missing: expected train/<wnid>/images/.")
  folders = sorted(p.name for p in train.iterdir() if p.is_dir())
  if folders != wnids:
    missing = sorted(set(wnids) - set(folders))
    extra = sorted(set(folders) - set(wnids))
    raise SourceError(
        f"{train} does not match {src / 'wnids.txt'}: classes without a"
        f" folder {missing[:5]}, folders not in wnids.txt {extra[:5]}.")
  return wnids


def class_words(src: epath.Path, wnids: list[str]) -> dict[str, str]:
  """WordNet id -> class names, from words.txt (empty names if absent)."""
  words = {}
  if (src / "words.txt").exists():
    for line in (src / "words.txt").read_text().splitlines():
      wnid, _, names = line.partition("\t")
      words[wnid.strip()] = names.strip()
  return {wnid: words.get(wnid, "") for wnid in wnids}


def train_files(src: epath.Path, wnids: list[str],
                per_class: int) -> list[tuple[str, epath.Path]]:
  """(wnid, path) of the images numbered 0..per_class-1 of each class."""
  out = []
  for wnid in wnids:
    folder = src / "train" / wnid / "images"
    if not folder.is_dir():
      raise SourceError(f"{folder} is missing.")
    numbered = {}
    for path in folder.iterdir():
      match = _TRAIN_FILE.match(path.name)
      if match and match.group(1) == wnid:
        numbered[int(match.group(2))] = path
    missing = [i for i in range(per_class) if i not in numbered]
    if missing:
      raise SourceError(
          f"{folder} lacks {wnid}_{missing[0]}.JPEG (and {len(missing) - 1}"
          f" more) of the {per_class} images per class asked for.")
    out += [(wnid, numbered[i]) for i in range(per_class)]
  return out


def validation_files(src: epath.Path, wnids: list[str]
                     ) -> list[tuple[str, epath.Path]]:
  """(wnid, path) for every line of val/val_annotations.txt."""
  annotations = src / "val" / "val_annotations.txt"
  lines = _read_lines(annotations, "the validation labels")
  known = set(wnids)
  out = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) < 2 or fields[1].strip() not in known:
      raise SourceError(
          f"{annotations}, line {number}: expected 'FILE<tab>WNID<tab>box',"
          f" with WNID one of the {len(wnids)} classes; got {line!r}.")
    path = src / "val" / "images" / fields[0].strip()
    if not path.exists():
      raise SourceError(
          f"{annotations}, line {number}: {path} does not exist.")
    out.append((fields[1].strip(), path))
  if not out:
    raise SourceError(f"{annotations} lists no images.")
  return out


class TinyImagenet(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder of `tiny_imagenet` from the unpacked official zip."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "train: images 0..N-1 of each class;"
                            " validation: all."}

  def __init__(self, *, wnids: list[str],
               train: list[tuple[str, epath.Path]],
               validation: list[tuple[str, epath.Path]], **kwargs):
    self._wnids, self._train, self._validation = wnids, train, validation
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            "Tiny ImageNet: 64x64 images of 200 ImageNet classes. train holds"
            f" {len(self._train) // len(self._wnids)} images per class of the"
            " original 500; validation is the original labelled validation"
            " split (50 per class)."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=self._wnids),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="http://cs231n.stanford.edu/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is local.
    return {"train": self._generate_examples(self._train),
            "validation": self._generate_examples(self._validation)}

  def _generate_examples(self, files: list[tuple[str, epath.Path]]
                         ) -> Iterator[tuple[str, dict]]:
    """(key, example) pairs; the JPEG bytes are stored as they are."""
    for wnid, path in files:
      yield path.name, dict(image=path.read_bytes(), label=wnid,
                            file_name=path.name)


def prepare(src: str, data_dir: str,
            train_per_class: int = TRAIN_PER_CLASS) -> tfds.core.DatasetBuilder:
  """Builds TFDS tiny_imagenet under `data_dir` from the folder `src`.

  Everything is checked before anything is written; an already prepared
  copy is left as it is. Returns the builder (read it with
  `tfds.builder('tiny_imagenet', data_dir=data_dir)` like any prepared data
  set).
  """
  if not 0 < train_per_class <= TRAIN_PER_CLASS:
    raise SourceError(f"--train_per_class={train_per_class}: give 1.."
                      f"{TRAIN_PER_CLASS} (the official train split has"
                      f" {TRAIN_PER_CLASS} images per class).")
  src_path = epath.Path(os.path.expanduser(src))
  # Every file and annotation is checked before anything is written.
  wnids = class_ids(src_path)
  builder = TinyImagenet(
      wnids=wnids, train=train_files(src_path, wnids, train_per_class),
      validation=validation_files(src_path, wnids),
      data_dir=os.path.expanduser(data_dir))
  builder.download_and_prepare()
  words = class_words(src_path, wnids)
  tsv = epath.Path(builder.data_dir).parent / "wnid_words.tsv"
  tsv.write_text("".join(f"{w}\t{n}\n" for w, n in words.items()))
  return builder
