"""`inverter.load(path)`: a trained inverter, restored for use (e.g. in Colab).

A workdir written by `python -m inverter.main` holds everything needed:
`config.json` (the resolved config, with the encoder reference
`encoder.weights`) and Orbax checkpoints. `load` rebuilds the encoder and
decoder on however many devices this machine has (a checkpoint written on 8
TPU cores restores on one CPU) and returns an `Inverter`:

  inv = inverter.load("gs://bucket/fc6")     # or a local workdir
  feats = inv.features(images)               # uint8 RGB, any size
  recons = inv.invert(feats)                 # uint8 RGB at the decoder size
  recons = inv.reconstruct(images)           # both at once
  recons = inv.reconstruct(images, method="optimize")  # or "hybrid"

`method` picks how features become an image: "decoder" (the trained
decoder, one forward pass), "optimize" (Mahendran & Vedaldi's optimisation
from noise, see inverter/optimization.py) or "hybrid" (that optimisation
started from the decoder's reconstruction).

Images are file paths (local or gs://), PIL images or uint8 RGB arrays: one
image, a batch [N, H, W, 3], or a list of images of different sizes
(grayscale and RGBA are converted). The
inverter's own preprocessing (Caffe-style warp, centre crop, mean) is applied
inside. Work runs in fixed-size batches sharded over all local devices, so
any number of images works and nothing recompiles between calls.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from absl import logging
from etils import epath

from inverter import encoder_weights as encoder_weights_lib
from inverter import checkpointing, feature_transforms, optimization, presets
from inverter import images as images_lib
from inverter import data as data_lib
from inverter import train

class NotAnInverterError(FileNotFoundError):
  """The path is not a workdir with a saved config and a checkpoint."""


def _merge(defaults: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
  """`saved` on top of `defaults`, recursively: fields added to the config
  after a workdir was written get their (behaviour-preserving) defaults."""
  out = dict(defaults)
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(out.get(key), dict):
      out[key] = _merge(out[key], value)
    else:
      out[key] = value
  return out


def saved_config(path: str) -> ml_collections.ConfigDict:
  """The config an inverter workdir was trained with."""
  config_path = epath.Path(path) / "config.json"
  if not config_path.exists():
    raise NotAnInverterError(
        f"No config.json in {path}: not an inverter workdir. Pass the"
        " --workdir of a `python -m inverter.main` run (local or gs://).")
  saved = json.loads(config_path.read_text())["config"]
  try:
    arch = saved.get("encoder", {}).get("arch", "caffenet")
    defaults = presets.get_config(saved["layer"], f"arch={arch}").to_dict()
  except (KeyError, ValueError):
    defaults = {}
  return ml_collections.ConfigDict(_merge(defaults, saved))


def _restore_params(exp: train.Experiment, path: str) -> tuple[Any, int]:
  """The decoder params of the newest checkpoint, replicated on this mesh."""
  manager = checkpointing.reader(path)
  try:
    step = manager.latest_step()
    if step is None:
      raise NotAnInverterError(
          f"No checkpoint in {checkpointing.directory(path)}; train first"
          f" (python -m inverter.main --config=... --workdir={path}).")
    # Shapes only (nothing is compiled or allocated): the full train state,
    # because that is what was saved, placed replicated on the local mesh.
    abstract = jax.eval_shape(lambda: train.create_train_state(exp, 0))
    abstract = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                       sharding=exp.replicated), abstract)
    state, _ = checkpointing.restore(manager, step, abstract)
  finally:
    manager.close()
  return state.params, int(step)


def _raw_experiment(exp: train.Experiment) -> train.Experiment:
  """`exp` without its feature transform: the encoder's features as they are."""
  config = ml_collections.ConfigDict(exp.config.to_dict())
  config.feature_transform = ""
  return dataclasses.replace(exp, config=config)


class Inverter:
  """A restored inverter: encoder, decoder params and their preprocessing.

  Attributes: `config` (as trained), `path`, `step` (of the checkpoint),
  `layer`, `tap`, `feature_transform`, `feature_shape` (per example),
  `input_size` and `output_size` (pixels), `name` (e.g. 'fc8' or
  'fc8_top5'), `batch_size` (images per device call).
  """

  def __init__(self, path: str, config: ml_collections.ConfigDict,
               exp: train.Experiment, params: Any, step: int,
               batch_size: int):
    self.path, self.config, self.exp = str(path), config, exp
    self.params, self.step = params, step
    self.layer, self.tap = config.layer, exp.tap
    self.feature_transform = config.get("feature_transform", "")
    self.feature_shape = tuple(exp.feature_shape)
    self.input_size = int(config.encoder.input_size)
    self.output_size = int(exp.output_size)
    self.name = self.layer + (f"_{self.feature_transform}"
                              if self.feature_transform else "")
    devices = jax.device_count()
    self.batch_size = -(-max(1, batch_size) // devices) * devices
    rep, data = exp.replicated, exp.data_sharding
    raw = _raw_experiment(exp)
    jit = lambda fn: jax.jit(fn, in_shardings=(rep, data), out_shardings=data)
    self._encode = {
        False: jit(lambda p, x: train.features(exp, p, x)),
        True: jit(lambda p, x: train.features(raw, p, x)),
    }
    self._decode = jit(lambda p, f: exp.decoder.apply({"params": p}, f))
    self._target = jax.jit(lambda x: train.targets_for(x, self.output_size))

  def __repr__(self) -> str:
    return (f"Inverter({self.name}, tap {self.tap}, step {self.step},"
            f" {self.input_size}px -> {self.output_size}px, {self.path})")

  # ------------------------------------------------------------------ images

  def preprocess(self, images: images_lib.Images) -> np.ndarray:
    """Image(s) (paths, PIL or uint8 RGB) -> float32 [N, S, S, 3] encoder
    input (BGR, mean subtracted): warped to data.resize_size and
    centre-cropped, as in eval."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    rgb = images_lib.as_rgb_list(images)
    if not rgb:
      raise images_lib.ImageInputError(f"{self.name}: no images given.")
    out = [data_lib.caffe_preprocess(
        tf.convert_to_tensor(image), data=self.config.data, train=False)
           for image in rgb]
    return np.stack([np.asarray(o) for o in out]).astype(np.float32)

  def to_rgb(self, images: np.ndarray) -> np.ndarray:
    """Encoder-space or decoder-output images -> uint8 RGB."""
    return data_lib.to_rgb_uint8(np.asarray(images), self.config.data)

  def target(self, preprocessed: np.ndarray) -> np.ndarray:
    """What a reconstruction is compared with: the input at the output size."""
    return np.asarray(self._target(jnp.asarray(preprocessed, jnp.float32)))

  # ---------------------------------------------------------------- features

  def encode(self, preprocessed: np.ndarray, raw: bool = False) -> np.ndarray:
    """Preprocessed images -> the features the decoder takes ([N, ...]);
    `raw=True` skips the inverter's feature_transform (e.g. top5)."""
    x = np.asarray(preprocessed, np.float32)
    expected = (self.input_size, self.input_size, 3)
    if x.ndim != 4 or x.shape[1:] != expected:
      raise ValueError(f"{self.name}: preprocessed images must have shape"
                       f" [N, {', '.join(map(str, expected))}], got"
                       f" {x.shape}; use features() for raw uint8 images.")
    return self._batched(self._encode[raw], self.exp.encoder_params, x)

  def decode(self, features: np.ndarray) -> np.ndarray:
    """Features [N, ...] -> reconstructions in the network's input space
    (BGR, mean subtracted, 0-255 scale) at output_size."""
    f = np.asarray(features, np.float32)
    if f.ndim != 1 + len(self.feature_shape) or (
        f.shape[1:] != self.feature_shape):
      raise ValueError(f"{self.name} inverts features of shape [N,"
                       f" {', '.join(map(str, self.feature_shape))}] (tap"
                       f" {self.tap}), got {f.shape}.")
    return self._batched(self._decode, self.params, f)

  def features(self, images: images_lib.Images) -> np.ndarray:
    """Image(s) (paths, PIL or uint8 RGB) -> features as the decoder sees them ([N, ...];
    one image gives one feature array without the batch axis)."""
    out = self.encode(self.preprocess(images))
    return out[0] if images_lib.is_single(images) else out

  def invert(self, features: np.ndarray, method: str = "decoder",
             settings: optimization.Settings | None = None) -> np.ndarray:
    """Features ([N, ...], or one example) -> uint8 RGB reconstructions, by
    `method` (decoder, optimize or hybrid; `settings` for the last two)."""
    f = np.asarray(features, np.float32)
    single = f.shape == self.feature_shape
    out = self.to_rgb(self.decode_by(method, f[None] if single else f,
                                     settings))
    return out[0] if single else out

  def reconstruct(self, images: images_lib.Images, method: str = "decoder",
                  settings: optimization.Settings | None = None
                  ) -> np.ndarray:
    """Image(s) (paths, PIL or uint8 RGB) -> uint8 RGB reconstructions, by
    `method` (decoder, optimize or hybrid; `settings` for the last two)."""
    feats = self.encode(self.preprocess(images))
    out = self.to_rgb(self.decode_by(method, feats, settings))
    return out[0] if images_lib.is_single(images) else out

  # ------------------------------------------------------------ optimisation

  @functools.cached_property
  def problem(self) -> optimization.Problem:
    """What optimisation-based inversion matches: this inverter's encoder,
    tap and feature transform."""
    return optimization.problem_for(self.exp)

  def decode_by(self, method: str, features: np.ndarray,
                settings: optimization.Settings | None = None) -> np.ndarray:
    """Features [N, ...] -> reconstructions in the network's input space at
    output_size, by the trained decoder, M&V's optimisation, or the hybrid
    (the optimisation started from, and by `anchor_weight` held near, the
    decoder's reconstruction)."""
    if method not in optimization.METHODS:
      raise optimization.OptimizationError(
          f"Unknown method {method!r}; use one of"
          f" {', '.join(optimization.METHODS)}.")
    if method == "decoder":
      return self.decode(features)
    settings = settings or optimization.Settings()
    start = None
    if method == "hybrid":
      settings = dataclasses.replace(settings, init="image")
      start = self.to_input_size(self.decode(features))
    elif settings.init == "image":
      raise optimization.OptimizationError(
          "init='image' needs start images: use method='hybrid', or"
          " optimize(features, start=...).")
    return self.target(self.optimize(features, settings, start)["image"])

  def to_input_size(self, images: np.ndarray) -> np.ndarray:
    """Decoder-size images -> the encoder's input size (antialiased)."""
    images = np.asarray(images, np.float32)
    if images.shape[1] == self.input_size:
      return images
    shape = (len(images), self.input_size, self.input_size, 3)
    return np.asarray(jax.image.resize(images, shape, "linear",
                                       antialias=True))

  def optimize(self, features: np.ndarray,
               settings: optimization.Settings | None = None,
               start: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Optimisation-based inversion of features [N, ...]: `image` (the
    network's input space, input_size), `energy` and `feature_error`
    (||phi(x) - phi0|| / ||phi0||) per image. Runs in chunks of batch_size
    (padded, so nothing recompiles), logging progress."""
    settings = settings or optimization.Settings()
    f = np.asarray(features, np.float32)
    b, outs, begun = self.batch_size, [], time.monotonic()
    for first in range(0, len(f), b):
      chunk = _pad_to(f[first:first + b], b)
      start_chunk = None if start is None else _pad_to(
          np.asarray(start[first:first + b], np.float32), b)
      got = optimization.invert(settings, self.problem, chunk, start_chunk)
      count = min(b, len(f) - first)
      outs.append({k: v[:count] for k, v in got.items()})
      done = first + count
      elapsed = time.monotonic() - begun
      logging.info("%s: optimised %d/%d images, %.2f s per image, ETA %.0fs",
                   self.name, done, len(f), elapsed / done,
                   elapsed / done * (len(f) - done))
    if not outs:
      raise images_lib.ImageInputError(f"{self.name}: no features given.")
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

  def _batched(self, fn, params: Any, x: np.ndarray) -> np.ndarray:
    """Runs `fn(params, chunk)` over fixed-size, zero-padded chunks."""
    b, outs = self.batch_size, []
    for start in range(0, len(x), b):
      chunk = x[start:start + b]
      pad = b - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]),
                                                chunk.dtype)])
      outs.append(np.asarray(fn(params, chunk))[:b - pad])
    if not outs:
      raise ValueError(f"{self.name}: no images given.")
    return np.concatenate(outs)


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
  """`x` with its last row repeated up to `size` rows."""
  if len(x) == size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def load(path: str | os.PathLike, *, encoder_weights: str | None = None,
         batch_size: int | None = None) -> Inverter:
  """Restores the inverter in workdir `path` (local or gs://).

  Args:
    path: the --workdir of a training run (config.json + checkpoints/).
    encoder_weights: where the encoder weights are on this machine, if not
      at the path the run used (config field encoder.weights).
    batch_size: images per device call (default: the run's eval_batch_size,
      rounded up to a multiple of the device count).
  """
  path = str(path)
  config = saved_config(path)
  if encoder_weights:
    config.encoder.weights = encoder_weights
  feature_transforms.check(config.get("feature_transform", ""))
  problems = encoder_weights_lib.check(config.encoder)
  if problems:
    raise encoder_weights_lib.EncoderWeightsError(
        "\n".join(problems) + f"\n  The inverter in {path} was trained on"
        " these encoder weights; pass inverter.load(path,"
        " encoder_weights=WHERE_THEY_ARE) if they are elsewhere here.")
  exp = train.setup(config)
  params, step = _restore_params(exp, path)
  if train.trains_encoder(config):
    # An autoencoder: its fine-tuned encoder replaces the configured one.
    params, encoder_params = train.split_params(exp, params)
    exp = dataclasses.replace(exp, encoder_params=encoder_params)
  return Inverter(path, config, exp, params, step,
                  batch_size or int(config.eval_batch_size))
