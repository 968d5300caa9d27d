"""Frozen encoder weights on disk: the format ported and trained encoders share.

An encoder directory holds
  metadata.json  {"format", "architecture": {...encoder config fields...},
                  "preprocessing": {"channel_order", "mean", "input_size",
                  "scale"}, "source": {...}}
  params/        an Orbax checkpoint of the Flax params
                 {conv1..conv5, fc6..fc8: {kernel, bias}}.
Loading checks the architecture against the config, so an inverter is never
trained silently on the wrong network.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from inverter import errors
from inverter.models import encoders

FORMAT = "inverter-encoder-v1"
RANDOM = "random"

# Per architecture, the encoder config fields that define the network (and
# so must match): {arch: (field, ...)}, including `preprocessing`.
ARCHITECTURE_FIELDS = encoders.ARCHITECTURE_FIELDS


class EncoderWeightsError(errors.UserError, ValueError):
  """The configured encoder weights are missing, unreadable or mismatched."""


def architecture(encoder_cfg: Mapping[str, Any]) -> dict[str, Any]:
  """The architecture-defining fields of an encoder config, JSON-friendly."""
  encoders.check_arch(encoder_cfg["arch"])
  fields = encoders.with_field_defaults(encoder_cfg)
  out = {}
  for key in ARCHITECTURE_FIELDS[encoder_cfg["arch"]]:
    value = fields[key]
    if isinstance(value, (tuple, list)):
      value = list(value)
    elif hasattr(value, "to_dict"):
      value = value.to_dict()
    elif isinstance(value, Mapping):
      value = dict(value)
    out[key] = json.loads(json.dumps(value))  # Tuples inside -> lists.
  return out


def is_random(weights: str | None) -> bool:
  return weights == RANDOM


def missing_weights_message(path: str) -> str:
  return (
      f"Encoder weights not found at {path} (config field encoder.weights).\n"
      "  Pretrained weights must be converted to inverter's format first."
      " For the paper's CaffeNet, run\n"
      "    python -m inverter.port --download"
      " bvlc_reference_caffenet.caffemodel\n"
      "  (or `python -m inverter.port FILE` with a file you already have);"
      " it writes to the default encoder.weights path. See"
      " docs/encoders.md.\n"
      "  To train against a randomly initialised encoder instead, pass"
      " --config.encoder.weights=random (it is then stated in all outputs).")


def check(encoder_cfg: Mapping[str, Any]) -> list[str]:
  """Problems with the configured weights, without loading them."""
  weights = encoder_cfg["weights"]
  if is_random(weights):
    return []
  if not weights:
    return ["encoder.weights is empty: give a path to converted encoder"
            " weights or 'random'."]
  path = epath.Path(os.path.expanduser(weights))
  if not (path / "metadata.json").exists() or not (path / "params").exists():
    return [missing_weights_message(str(path))]
  try:
    meta = json.loads((path / "metadata.json").read_text())
  except (OSError, ValueError) as e:
    return [f"Encoder weights at {path} (config field encoder.weights):"
            f" metadata.json is unreadable ({e}); re-export or re-port them,"
            " or point --config.encoder.weights elsewhere."]
  if meta.get("format") != FORMAT:
    return [f"Encoder weights at {path} (config field encoder.weights) have"
            f" format {meta.get('format')!r}, expected {FORMAT!r}; convert"
            " them with `python -m inverter.port` or point"
            " --config.encoder.weights elsewhere."]
  expected = architecture(encoder_cfg)
  stored = encoders.with_field_defaults(meta.get("architecture", {}))
  # Every field the config's arch defines; a stored network of another
  # arch differs at least in `arch`.
  diffs = [f"encoder.{k}: config {expected[k]!r}, weights {stored.get(k)!r}"
           for k in expected if stored.get(k) != expected[k]]
  if diffs:
    return [f"Encoder weights at {path} (config field encoder.weights) are"
            " of another network than the config describes:\n  "
            + "\n  ".join(diffs)
            + "\n  Take every encoder field from the weights with"
            f" --config=configs/LAYER.py:encoder={weights}, set the fields"
            " above to the weights' values, or point --config.encoder.weights"
            " at weights of the configured network."]
  return []


def init_params(model: nn.Module, seed: int) -> Any:
  x = jnp.zeros((1, model.input_size, model.input_size, 3), jnp.float32)
  return jax.jit(lambda k: model.init(k, x)["params"])(jax.random.key(seed))


def load(encoder_cfg: Mapping[str, Any], model: nn.Module) -> Any:
  """Returns the encoder's params (host arrays) as configured."""
  weights = encoder_cfg["weights"]
  if is_random(weights):
    logging.warning(
        "ENCODER IS RANDOMLY INITIALISED (encoder.weights=random, seed %d): "
        "reconstructions show what a random %s keeps, not a trained one.",
        encoder_cfg["init_seed"], encoder_cfg["arch"])
    return init_params(model, int(encoder_cfg["init_seed"]))
  problems = check(encoder_cfg)
  if problems:
    raise EncoderWeightsError("\n".join(problems))
  path = epath.Path(os.path.expanduser(weights))
  target = jax.eval_shape(lambda: init_params(model, 0))
  try:
    params = ocp.StandardCheckpointer().restore(
        (path / "params").resolve(), jax.tree.map(
            lambda s: np.zeros(s.shape, s.dtype), target))
  except Exception as e:  # Orbax raises many types for a damaged checkpoint.
    raise EncoderWeightsError(
        f"Could not read encoder params from {path / 'params'} (config field"
        f" encoder.weights): {e}. Re-export or re-port the weights, or point"
        " --config.encoder.weights elsewhere.") from e
  bad = [f"{jax.tree_util.keystr(k)}: {np.shape(v)} != {t.shape}"
         for (k, v), t in zip(jax.tree_util.tree_leaves_with_path(params),
                              jax.tree.leaves(target))
         if np.shape(v) != t.shape]
  if bad:
    raise EncoderWeightsError(
        f"Encoder params at {path} (config field encoder.weights) have the"
        " wrong shapes for the network their metadata.json describes: "
        + "; ".join(bad) + ". Re-export or re-port the weights.")
  logging.info("Loaded encoder weights from %s", path)
  return params


def save(path: str, params: Any, encoder_cfg: Mapping[str, Any], *,
         preprocessing: Mapping[str, Any], source: Mapping[str, Any]) -> None:
  """Writes params + metadata in the format `load` reads."""
  path = epath.Path(os.path.expanduser(path))
  path.mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save((path / "params").resolve(),
                    jax.tree.map(np.asarray, params), force=True)
  checkpointer.wait_until_finished()
  meta = dict(format=FORMAT, architecture=architecture(encoder_cfg),
              preprocessing=dict(preprocessing), source=dict(source))
  (path / "metadata.json").write_text(json.dumps(meta, indent=2))
