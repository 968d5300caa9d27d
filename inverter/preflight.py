"""Checks that a run can start, before any work is done.

Every problem is collected and reported at once, so a user fixing a new
machine sees the whole list (data, weights, config) in one try instead of
discovering them one crash at a time.
"""

from __future__ import annotations

import math

import jax
import ml_collections

from inverter import encoder_weights, feature_transforms, input_pipeline
from inverter.models import encoders, preprocessing


class PreflightError(RuntimeError):
  """One or more prerequisites of a run are missing; the message lists all."""

  def __init__(self, problems: list[str]):
    self.problems = list(problems)
    text = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(self.problems))
    super().__init__(
        f"Cannot start: {len(self.problems)} problem(s) found.\n\n{text}")


def resolved_tap(config: ml_collections.ConfigDict) -> str:
  """The activation this experiment inverts."""
  return config.encoder.tap or encoders.default_tap(config.encoder.arch,
                                                    config.layer)


def batch_size_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Global batch sizes must split evenly over the devices."""
  problems = []
  devices = jax.device_count()
  for field in ("batch_size", "eval_batch_size"):
    value = config[field]
    if value <= 0 or value % devices:
      problems.append(
          f"{field}={value} must be a positive multiple of the number of"
          f" devices ({devices}) so every device gets the same share;"
          f" e.g. --config.{field}={max(devices, value - value % devices)}.")
  return problems


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Problems in the config itself (no file system or data access)."""
  problems = []
  try:
    encoders.check_layer(config.layer)
    encoders.check_arch(config.encoder.arch)
    encoders.check_tap(config.encoder.arch, resolved_tap(config))
  except ValueError as e:
    problems.append(str(e))
  try:
    feature_transforms.check(config.get("feature_transform", ""))
  except ValueError as e:
    problems.append(str(e))
  if "preprocessing" not in config.encoder:
    problems.append("encoder.preprocessing is missing; start the encoder"
                    " block from presets.encoder_config(arch).")
  else:
    problems += preprocessing.problems(config.encoder.preprocessing,
                                       config.data)
  if config.data.crop_size != config.encoder.input_size:
    problems.append(
        f"data.crop_size={config.data.crop_size} differs from"
        f" encoder.input_size={config.encoder.input_size}: the encoder takes"
        " exactly its input size. Set both to the same value.")
  if config.data.resize_size < config.data.crop_size:
    problems.append(
        f"data.resize_size={config.data.resize_size} is smaller than"
        f" data.crop_size={config.data.crop_size}.")
  problems += batch_size_problems(config)
  if config.eval_batch_size < 2:
    problems.append("eval_batch_size must be at least 2: the normalized error"
                    " compares images within a batch.")
  if config.decoder.fc_widths and (
      config.decoder.fc_widths[-1] != math.prod(config.decoder.start_shape)):
    problems.append(
        f"decoder.fc_widths[-1]={config.decoder.fc_widths[-1]} must equal the"
        f" size of decoder.start_shape {tuple(config.decoder.start_shape)}"
        f" ({math.prod(config.decoder.start_shape)}).")
  if config.compute_dtype not in ("float32", "bfloat16"):
    problems.append(f"compute_dtype must be 'float32' or 'bfloat16', got"
                    f" {config.compute_dtype!r}.")
  if config.optimizer.schedule not in ("step", "cosine", "constant"):
    problems.append(f"optimizer.schedule must be 'step', 'cosine' or"
                    f" 'constant', got {config.optimizer.schedule!r}.")
  return problems


def check(config: ml_collections.ConfigDict) -> None:
  """Raises PreflightError listing every problem found, if any."""
  problems = config_problems(config)
  problems += input_pipeline.check_source(config.data)
  problems += encoder_weights.check(config.encoder)
  if problems:
    raise PreflightError(problems)
