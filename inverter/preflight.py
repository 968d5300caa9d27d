"""Checks that a run can start, before any work is done.

Every problem is collected and reported at once, so a user fixing a new
machine sees the whole list (data, weights, config) in one try instead of
discovering them one crash at a time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from inverter import encoder_weights, errors, feature_transforms
from inverter import data as data_lib
from inverter.models import decoder as decoder_lib
from inverter.models import encoders, preprocessing

# The largest encoder input the search for the smallest usable one tries.
_MAX_INPUT_SIZE = 1024


class PreflightError(errors.UserError, RuntimeError):
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
      lower = max(0, value - value % devices)
      fixes = [f"--config.{field}={n}"
               for n in (lower, lower + devices) if n > 0]
      problems.append(
          f"{field}={value} must be a positive multiple of the number of"
          f" devices ({devices}) so every device gets the same share;"
          f" e.g. {' or '.join(fixes)}.")
  return problems


def _tap_shapes(encoder_cfg, input_size: int | None = None
                ) -> dict[str, tuple[int, ...]]:
  """Every tap's per-example shape for an `input_size` input (default: the
  configured one); raises if the network cannot take it."""
  cfg = {key: encoder_cfg[key] for key in encoder_cfg.keys()}
  if input_size is not None:
    cfg["input_size"] = input_size
  shapes = encoders.tap_shapes(encoders.from_config(cfg))
  for name, shape in shapes.items():
    if 0 in shape:
      raise ValueError(f"tap {name} would be empty, shape {shape}")
  return shapes


def _takes(encoder_cfg, input_size: int) -> bool:
  try:
    _tap_shapes(encoder_cfg, input_size)
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def _smallest_input_size(encoder_cfg, above: int) -> int | None:
  """The smallest input size > `above` the encoder takes (a larger input
  never gives smaller feature maps), or None if none up to the limit does."""
  high = max(above + 1, 1)
  while not _takes(encoder_cfg, high):
    if high >= _MAX_INPUT_SIZE:
      return None
    high = min(2 * high, _MAX_INPUT_SIZE)
  low = max(above, 0)  # Fails (or is below the sizes that can work).
  while high - low > 1:
    middle = (low + high) // 2
    if _takes(encoder_cfg, middle):
      high = middle
    else:
      low = middle
  return high


def encoder_shape_problems(encoder_cfg
                           ) -> tuple[dict[str, tuple[int, ...]] | None,
                                      list[str]]:
  """(tap shapes, problems): whether the encoder takes encoder.input_size.

  Checked by tracing shapes only (no compute), so an input the network
  shrinks to nothing is refused at start-up with the size that works,
  instead of failing inside the first compiled step.
  """
  size = encoder_cfg["input_size"]
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    return None, [f"encoder.input_size must be a positive integer, got"
                  f" {size!r}; e.g. --config.encoder.input_size=227."]
  try:
    return _tap_shapes(encoder_cfg), []
  except Exception as e:  # pylint: disable=broad-except
    error = e
  reason = " ".join(str(error).split())[:300].rstrip(".")
  smallest = _smallest_input_size(encoder_cfg, size)
  if smallest is None:
    return None, [
        f"The encoder (encoder.arch={encoder_cfg['arch']!r}) cannot be built"
        f" from its config fields: {type(error).__name__}: {reason}. Fix the"
        " encoder.* fields; start the encoder block from"
        " presets.encoder_config(arch)."]
  return None, [
      f"encoder.input_size={size} is too small for this encoder"
      f" (encoder.arch={encoder_cfg['arch']!r}): its layers shrink"
      f" {size}x{size} images to nothing ({reason}). The smallest input it"
      f" takes is {smallest}; set --config.encoder.input_size={smallest}"
      f" --config.data.crop_size={smallest} (and data.resize_size at least"
      " that) or larger."]


def decoder_problems(config: ml_collections.ConfigDict,
                     feature_shape: tuple[int, ...]) -> list[str]:
  """Whether the decoder can be built for the inverted features (shapes
  only), so a bad decoder.* field stops the run before any compilation."""
  try:
    args = decoder_lib.resolve(config.decoder, feature_shape,
                               config.encoder.input_size)
    args.pop("output_size")
    decoder = decoder_lib.UpconvDecoder(**args)
    features = jax.ShapeDtypeStruct((1, *feature_shape), jnp.float32)
    jax.eval_shape(lambda x: decoder.init(jax.random.key(0), x), features)
  except Exception as e:  # pylint: disable=broad-except
    reason = " ".join(str(e).split())[:300].rstrip(".")
    return [f"The decoder cannot invert {resolved_tap(config)} features of"
            f" shape {tuple(feature_shape)}: {reason}. Fix the decoder.*"
            " fields (see presets.get_config for working values)."]
  return []


def _fc_width_problems(config: ml_collections.ConfigDict) -> list[str]:
  decoder = config.decoder
  if decoder.fc_widths and (
      decoder.fc_widths[-1] != math.prod(decoder.start_shape)):
    return [f"decoder.fc_widths[-1]={decoder.fc_widths[-1]} must equal the"
            f" size of decoder.start_shape {tuple(decoder.start_shape)}"
            f" ({math.prod(decoder.start_shape)})."]
  return []


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Problems in the config itself (no file system or data access)."""
  problems = []
  try:
    encoders.check_layer(config.layer)
    encoders.check_arch(config.encoder.arch)
    encoders.check_tap(config.encoder.arch, resolved_tap(config),
                       config.encoder)
  except ValueError as e:
    problems.append(str(e))
  else:
    shapes, shape_problems = encoder_shape_problems(config.encoder)
    problems += shape_problems
    if shapes is not None and not _fc_width_problems(config):
      problems += decoder_problems(config, shapes[resolved_tap(config)])
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
        " exactly its input size. Set both to the same value, e.g."
        f" --config.data.crop_size={config.encoder.input_size}.")
  if config.data.resize_size < config.data.crop_size:
    problems.append(
        f"data.resize_size={config.data.resize_size} is smaller than"
        f" data.crop_size={config.data.crop_size}.")
  problems += batch_size_problems(config)
  if config.eval_batch_size < 2:
    problems.append("eval_batch_size must be at least 2: the normalized error"
                    " compares images within a batch.")
  problems += _fc_width_problems(config)
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
  problems += data_lib.check_source(config.data)
  # Weights are compared field by field with a known architecture; an
  # unknown encoder.arch is already reported above.
  if config.encoder.arch in encoders.ARCHITECTURES:
    problems += encoder_weights.check(config.encoder)
  if problems:
    raise PreflightError(problems)
