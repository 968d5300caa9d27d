"""From fully connected features to class predictions, and class names.

`probabilities(inv, features)` runs the encoder's remaining layers from the
inverter's tap with the encoder's own dense params: fc6 -> relu6 -> fc7 ->
relu7 -> fc8 -> softmax for AlexNets and VGG-16, pool5 -> fc1000 (ResNet) or
logits (GoogLeNet) -> softmax, starting wherever the tap is
(`encoders.class_tail`). `class_names(inv, ...)` finds
human-readable names for the encoder's classes where a trustworthy local
source exists, else None (callers then print class indices).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from inverter import encoder_weights, loading
from inverter import data as data_lib
from inverter.models import encoders


def has_classes(inv: loading.Inverter) -> bool:
  """True if the inverter's features lead to class scores through dense
  layers only (fc6 onwards; pool5 onwards for ResNet and GoogLeNet)."""
  return inv.tap in encoders.class_tail(inv.config.encoder.arch)


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def tail(params: Any, tap: str, features: np.ndarray,
         arch: str = "caffenet") -> np.ndarray:
  """Applies the layers of encoder `arch` after `tap` to [N, D] features;
  returns the class probabilities [N, classes] (float64)."""
  stages = encoders.class_tail(arch)
  if tap not in stages:
    raise ValueError(f"Class predictions need a fully connected tap"
                     f" ({', '.join(stages)}), got {tap!r}.")
  h = np.asarray(features, np.float64)
  for stage in stages[stages.index(tap) + 1:]:
    if stage.startswith("relu"):
      h = np.maximum(h, 0.0)
    elif stage == "prob":
      h = _softmax(h)
    else:
      kernel = np.asarray(params[stage]["kernel"], np.float64)
      h = h @ kernel + np.asarray(params[stage]["bias"], np.float64)
  if tap == "prob":  # Already probabilities (a perturbed or sampled vector).
    h = np.maximum(h, 0.0)
    h = h / np.maximum(h.sum(axis=1, keepdims=True), 1e-12)
  return h


def probabilities(inv: loading.Inverter, features: np.ndarray) -> np.ndarray:
  return tail(inv.exp.encoder_params, inv.tap, features,
              inv.config.encoder.arch)


def top_k(probs: np.ndarray, names: Sequence[str] | None,
          k: int = 5) -> list[list[dict[str, Any]]]:
  """Per example, the k most probable classes: {index, name, probability}."""
  out = []
  for row in probs:
    idx = np.argsort(-row, kind="stable")[:k]
    out.append([dict(index=int(i), name=names[i] if names else f"class {i}",
                     probability=float(row[i])) for i in idx])
  return out


# ------------------------------------------------------------------- names


def imagenet_names() -> list[str] | None:
  """The 1000 ILSVRC-2012 class names in the standard (sorted synset) index
  order, read from the copy inside the installed tensorflow_datasets; the
  first synonym of each, e.g. 'tench', 'goldfish'."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from tensorflow_datasets.datasets.siscore import labels
  except ImportError:
    return None
  names = list(getattr(labels, "IMAGENET_LABELS_LIST", []))
  if len(names) != 1000:
    return None
  return [n.split(",")[0].strip() for n in names]


def imagenet_wnids() -> list[str] | None:
  """The 1000 ILSVRC-2012 WordNet ids in index order, from the copy inside
  the installed tensorflow_datasets (imagenet2012/labels.txt)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    path = os.path.join(os.path.dirname(tfds.__file__), "datasets",
                        "imagenet2012", "labels.txt")
    with open(path) as f:
      wnids = f.read().split()
  except OSError:
    return None
  return wnids if len(wnids) == 1000 else None


def readable(names: Sequence[str]) -> list[str]:
  """WordNet ids of ImageNet classes (e.g. Tiny ImageNet's labels) as
  their ImageNet names ('n01443537' -> 'goldfish'); other names as given."""
  wnids, words = imagenet_wnids(), imagenet_names()
  if not wnids or not words:
    return list(names)
  index = {w: i for i, w in enumerate(wnids)}
  return [words[index[n]] if n in index else n for n in names]


def dataset_names(source: str, data_dir: str | None,
                  num_classes: int) -> list[str] | None:
  """Class names of a data source with exactly `num_classes` classes: the
  sorted class folders of 'folder:PATH' (TFDS ImageFolder's label order, in
  PATH or in its first split folder), or a prepared TFDS dataset's label
  names."""
  if not source or source.startswith(data_lib.BUILTIN_PREFIX):
    return None
  try:
    if source.startswith(data_lib.FOLDER_PREFIX):
      root = source[len(data_lib.FOLDER_PREFIX):]
      candidates = [root] + [os.path.join(root, d) for d in
                             sorted(tf.io.gfile.listdir(root))]
      for folder in candidates:
        if not tf.io.gfile.isdir(folder):
          continue
        subdirs = sorted(d.rstrip("/") for d in tf.io.gfile.listdir(folder)
                         if tf.io.gfile.isdir(os.path.join(folder, d)))
        if len(subdirs) == num_classes:
          return subdirs
      return None
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(source, data_dir=data_dir)
    label = builder.info.features["label"]
    names = list(label.names)
    return names if len(names) == num_classes else None
  except Exception as e:  # pylint: disable=broad-except
    logging.info("No class names from %s: %s", source, e)
    return None


def _encoder_metadata(weights: str) -> dict[str, Any]:
  path = os.path.join(os.path.expanduser(weights), "metadata.json")
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except (OSError, ValueError, tf.errors.OpError):
    return {}


def class_names(inv: loading.Inverter,
                study_source: str = "") -> list[str] | None:
  """Names of the encoder's classes, or None where none are known.

  In order: none for a randomly initialised encoder (its classes mean
  nothing); the label names an encoder trained by inverter.classify stored in
  its metadata; the ImageNet names for a 1000-class encoder; the classes of
  the data the encoder was trained on or, failing that, of the study's data
  when it has exactly as many classes (e.g. a CIFAR-10 folder). WordNet ids
  of ImageNet classes become their names.
  """
  enc = inv.config.encoder
  n = int(enc.num_classes)
  if encoder_weights.is_random(enc.weights):
    return None
  source = _encoder_metadata(enc.weights).get("source", {})
  stored = source.get("label_names")
  if stored and len(stored) == n:
    return readable([str(s) for s in stored])
  if n == 1000:
    names = imagenet_names()
    if names:
      return names
  for data in (source.get("data"), study_source):
    names = dataset_names(data or "", inv.config.data.get("data_dir"), n)
    if names:
      return readable(names)
  return None
