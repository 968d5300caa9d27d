"""What every study shares: restoring the inverters, reading the evaluation
images in batches, the normalized error, progress lines and writing results.

Studies run in one process on its local devices (a workstation, a Colab or a
single TPU host); inverters are restored once per process and reused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from typing import Any, Iterator, Sequence

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from etils import epath

from inverter import errors, evaluation, images, loading
from inverter import data as data_lib
from inverter.models import encoders

Inverter = loading.Inverter

# Restored inverters by (path, encoder_weights override): a process that runs
# several studies (the tests, a notebook) restores each one once.
_RESTORED: dict[tuple[str, str], Inverter] = {}


class MissingInverterError(errors.UserError, ValueError):
  """A study needs an inverter (a layer) that none of the given ones is."""


# --------------------------------------------------------------- inverters


def inverter_paths(entries: str | Sequence[str]) -> list[str]:
  """config.inverters -> workdirs, in order, without repeats.

  `entries` is a tuple of workdirs (local or gs://) or globs
  ('/runs/demo_*'); a single string may also hold several, comma-separated
  (what `--config.inverters=/a,/b` gives when set from Python).
  """
  if isinstance(entries, str):
    entries = entries.split(",")
  paths: list[str] = []
  for entry in entries:
    entry = str(entry).strip()
    if not entry:
      continue
    if any(c in entry for c in "*?["):
      found = sorted(p for p in tf.io.gfile.glob(entry)
                     if tf.io.gfile.exists(os.path.join(p, "config.json")))
      if not found:
        raise FileNotFoundError(
            f"config.inverters: no inverter workdir (with config.json)"
            f" matches {entry!r}.")
      paths += found
    else:
      paths.append(entry)
  if not paths:
    raise errors.UserError(
        "config.inverters is empty: give the workdirs of trained inverters,"
        " e.g. --config.inverters=/tmp/conv1,/tmp/fc6 or a glob such as"
        " --config.inverters='/tmp/demo_*'.")
  return list(dict.fromkeys(paths))


def depth_key(inv: Inverter) -> tuple[int, str, str]:
  return (encoders.LAYERS.index(inv.layer), inv.feature_transform, inv.path)


def load_inverters(config: ml_collections.ConfigDict) -> list[Inverter]:
  """The configured inverters, restored, in depth order, each with a unique
  `label` (its name, plus the workdir's name where names repeat)."""
  weights = config.get("encoder_weights", "") or ""
  out = []
  for path in inverter_paths(config.inverters):
    key = (path, weights)
    if key not in _RESTORED:
      logging.info("Restoring the inverter in %s", path)
      _RESTORED[key] = loading.load(path, encoder_weights=weights or None,
                                    batch_size=config.batch_size)
    out.append(_RESTORED[key])
  out.sort(key=depth_key)
  labels = unique_labels([inv.name for inv in out], [inv.path for inv in out])
  for inv, label in zip(out, labels):
    inv.label = label
  return out


def unique_labels(names: Sequence[str], paths: Sequence[str]) -> list[str]:
  """Each name, or where names repeat, name@<the fewest trailing folders of
  its workdir that tell it apart> ('conv2@autoencoders' for
  .../autoencoders/conv2 beside .../inverters/conv2)."""
  parts = [[p for p in path.rstrip("/").split("/") if p] for path in paths]
  labels = []
  for i, name in enumerate(names):
    group = [j for j, other in enumerate(names) if other == name]
    if len(group) == 1:
      labels.append(name)
      continue
    for k in range(1, max(len(parts[j]) for j in group) + 1):
      if len({tuple(parts[j][-k:]) for j in group}) == len(group):
        break
    suffix = parts[i][-k:]
    if len(suffix) > 1 and suffix[-1] == name:
      suffix = suffix[:-1]  # The layer is already in the label.
    labels.append(f"{name}@{'/'.join(suffix)}")
  return labels


def train_command(layer: str, transform: str = "") -> str:
  config = f"configs/{layer}_{transform}.py" if transform else (
      f"configs/{layer}.py")
  return (f"python -m inverter.main --config={config} --workdir=WORKDIR"
          " (append :demo to the config for the offline demo setup)")


def find(inverters: Sequence[Inverter], layer: str,
         transform: str = "") -> Inverter | None:
  for inv in inverters:
    if inv.layer == layer and inv.feature_transform == transform:
      return inv
  return None


def require(inverters: Sequence[Inverter], study: str, layer: str,
            transform: str = "") -> Inverter:
  """The inverter of `layer` (with `transform`), or an error saying which
  inverter to train."""
  inv = find(inverters, layer, transform)
  if inv is not None:
    return inv
  what = layer + (f" trained on {transform} features" if transform else
                  " (trained on all features)")
  given = ", ".join(f"{i.label} ({i.path})" for i in inverters) or "none"
  raise MissingInverterError(
      f"Study {study!r} needs an inverter of {what}, and none of the given"
      f" inverters is one (given: {given}). Train one with\n  "
      f"{train_command(layer, transform)}\nand add WORKDIR to"
      " --config.inverters.")


# -------------------------------------------------------------------- data


def data_config(inv: Inverter,
                config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The inverter's own eval data config, pointed at the study's images.

  Every inverter reads the same images (config.data.source, its split and
  config.num_images), each preprocessed the way that inverter was trained.
  """
  data = ml_collections.ConfigDict(inv.config.data.to_dict())
  if config.data.source:
    data.source = config.data.source
  if config.data.get("data_dir"):
    data.data_dir = config.data.data_dir
  if config.data.get("split"):
    data.eval_split = config.data.split
  data.eval_num_images = int(config.num_images)
  problems = data_lib.check_source(data)
  if problems:
    raise FileNotFoundError(
        f"The study's images (config.data.source={data.source!r}) cannot be"
        " read:\n  " + "\n  ".join(problems))
  return data


def num_batches(inv: Inverter, config: ml_collections.ConfigDict) -> int:
  return data_lib.eval_num_batches(data_config(inv, config),
                                   local_batch_size=config.batch_size)


# Study images by (data config, batch size, labels): every inverter with the
# same preprocessing, and every later study in the process, reuses them.
_IMAGES: dict[str, list[tuple[np.ndarray, ...]]] = {}
_IMAGE_CACHE_BYTES = 1 << 30


def _cached_batches(inv: Inverter, config: ml_collections.ConfigDict,
                    with_labels: bool) -> Iterator[tuple[np.ndarray, ...]]:
  data = data_config(inv, config)
  key = json.dumps([data.to_dict(), config.batch_size, with_labels],
                   sort_keys=True, default=str)
  if key in _IMAGES:
    yield from _IMAGES[key]
    return
  kept, size = [], 0
  for batch in data_lib.eval_iterator(data, local_batch_size=config.batch_size,
                                      with_labels=with_labels):
    item = (np.asarray(batch["image"]), np.asarray(batch["mask"], bool))
    if with_labels:
      item += (np.asarray(batch["label"]),)
    size += item[0].nbytes
    if kept is not None:
      kept = kept + [item] if size <= _IMAGE_CACHE_BYTES else None
    yield item
  if kept is not None:
    _IMAGES[key] = kept


def batches(inv: Inverter, config: ml_collections.ConfigDict
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(preprocessed images [B, S, S, 3], mask [B]); the last batch is padded
  with masked-out zero images."""
  yield from _cached_batches(inv, config, with_labels=False)


def labelled_batches(inv: Inverter, config: ml_collections.ConfigDict
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """As `batches`, plus each image's class index [B] (0 for padding); for
  sources with labels only."""
  yield from _cached_batches(inv, config, with_labels=True)


def first_images(inv: Inverter, config: ml_collections.ConfigDict,
                 count: int) -> np.ndarray:
  """The first `count` study images, preprocessed for `inv`."""
  out, have = [], 0
  for x, mask in batches(inv, config):
    out.append(x[mask])
    have += int(mask.sum())
    if have >= count:
      break
  result = np.concatenate(out)[:count]
  if len(result) < count:
    raise ValueError(f"The study needs {count} images but"
                     f" config.num_images={config.num_images} gives only"
                     f" {len(result)}; raise config.num_images.")
  return result


# ------------------------------------------------------------------ errors


_batch_sums = jax.jit(evaluation.batch_sums)


class ErrorTracker:
  """The normalized error of one condition, accumulated over batches as in
  training's evaluation (pair distances within each batch), plus the first
  `keep` reconstructions as uint8 RGB for figures."""

  def __init__(self, inv: Inverter, keep: int = 0):
    self.inv, self.keep = inv, keep
    self.acc = evaluation.ErrorAccumulator()
    self._shown: list[np.ndarray] = []

  def add(self, targets: np.ndarray, recons: np.ndarray,
          mask: np.ndarray) -> None:
    self.acc.add(_batch_sums(targets, recons, mask))
    have = sum(len(s) for s in self._shown)
    if have < self.keep:
      self._shown.append(self.inv.to_rgb(recons[mask][:self.keep - have]))

  def result(self) -> dict[str, float]:
    out = self.acc.result()
    return {k: out[k] for k in ("normalized_error", "mean_l2_error",
                                "mean_pair_distance", "num_images")}

  @property
  def shown(self) -> np.ndarray:
    return np.concatenate(self._shown) if self._shown else np.zeros(
        (0, self.inv.output_size, self.inv.output_size, 3), np.uint8)


def describe(inv: Inverter) -> dict[str, Any]:
  """What identifies an inverter in results.json."""
  enc = inv.config.encoder
  return dict(label=inv.label, layer=inv.layer, tap=inv.tap, path=inv.path,
              step=inv.step, feature_transform=inv.feature_transform,
              encoder=enc.arch, encoder_weights=enc.weights,
              input_size=inv.input_size, output_size=inv.output_size)


# ---------------------------------------------------------------- progress


class Progress:
  """Logs `study: done/total units (what), rate, ETA` at most every few
  seconds and at the end, so long studies show they are moving."""

  def __init__(self, study: str, total: int, unit: str = "batches",
               every_s: float = 10.0):
    self.study, self.total, self.unit = study, total, unit
    self.every_s = every_s
    self.done, self.start = 0, time.monotonic()
    self._last = self.start

  def update(self, what: str, n: int = 1) -> None:
    self.done += n
    now = time.monotonic()
    if now - self._last < self.every_s and self.done < self.total:
      return
    self._last = now
    elapsed = now - self.start
    eta = elapsed / self.done * max(0, self.total - self.done)
    logging.info("%s: %d/%d %s (%s), %.1fs elapsed, ETA %.0fs", self.study,
                 self.done, self.total, self.unit, what, elapsed, eta)


# ----------------------------------------------------------------- writing


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if np.isfinite(value) else str(value)
  return value


def write_results(out_dir: epath.Path, results: dict[str, Any]) -> None:
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "results.json").write_text(
      json.dumps(_jsonable(results), indent=2) + "\n")


def _md_cell(value: Any) -> str:
  if isinstance(value, tuple):  # (number for the CSV, text for Markdown)
    return value[1]
  if isinstance(value, (float, np.floating)):
    return f"{value:.4f}"
  return str(value).replace("|", "\\|")


def write_table(out_dir: epath.Path, columns: Sequence[str],
                rows: Sequence[Sequence[Any]], title: str = "",
                notes: Sequence[str] = ()) -> str:
  """Writes table.md (4 decimals, with title and notes) and table.csv (full
  precision); returns the Markdown. A cell may be a (value, text) pair: the
  CSV gets the value, the Markdown the text."""
  out_dir.mkdir(parents=True, exist_ok=True)
  lines = [f"**{title}**", ""] if title else []
  lines += ["| " + " | ".join(columns) + " |",
            "|" + "|".join("---" for _ in columns) + "|"]
  lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
  if notes:
    lines += [""] + list(notes)
  markdown = "\n".join(lines) + "\n"
  (out_dir / "table.md").write_text(markdown)
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(columns)
  for row in rows:
    values = [v[0] if isinstance(v, tuple) else v for v in row]
    writer.writerow([repr(float(v)) if isinstance(v, (float, np.floating))
                     else v for v in values])
  (out_dir / "table.csv").write_text(buf.getvalue())
  return markdown


def write_figure(out_dir: epath.Path, name: str, image: np.ndarray) -> str:
  images.write_png(out_dir / name, image)
  return name
