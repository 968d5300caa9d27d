"""What every format converter shares: its result type, errors and registry."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

from inverter import errors


class PortError(errors.UserError, ValueError):
  """The source file cannot be converted; the message says why and what to do."""


@dataclasses.dataclass
class Ported:
  """A converted network, ready for `encoder_weights.save`.

  encoder: the full `encoder` config block (start from
    `presets.encoder_config(arch)` and set what the file determines).
  params: nested dict of numpy float32 arrays in the Flax layout.
  preprocessing: what the network expects as input (channel_order, mean,
    scale, input_size, and std where the network normalises by it).
  source: where it came from (file name, format, sha1, ...).
  extra_files: {file name: array} written with np.save into the encoder
    directory next to metadata.json (e.g. a full mean image 'mean.npy').
  warnings: things the user should know (printed by the CLI), e.g. values
    the file did not contain and that were taken from the preset.
  """

  encoder: ml_collections.ConfigDict
  params: dict[str, Any]
  preprocessing: dict[str, Any]
  source: dict[str, Any]
  extra_files: dict[str, Any] = dataclasses.field(default_factory=dict)
  warnings: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Format:
  """One readable file format.

  name: short name used on the command line (--format) and in metadata.
  sniff: (path) -> True if the file looks like this format (cheap: reads
    at most the first few KB).
  convert: (path, options) -> Ported; `options` holds the CLI options
    (e.g. 'arch', 'mean', 'input_size'); raise PortError on bad input.
  """

  name: str
  sniff: Callable[[str], bool]
  convert: Callable[[str, Mapping[str, Any]], Ported]


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
  FORMATS[fmt.name] = fmt
  return fmt


def sha1_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
  """Hex SHA-1 of a file, read in chunks (caffemodels are hundreds of MB)."""
  digest = hashlib.sha1()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      digest.update(block)
  return digest.hexdigest()


def source_info(path: str | os.PathLike[str],
                format_name: str) -> dict[str, Any]:
  """The `source` metadata of a ported file: name, format, SHA-1, size."""
  return dict(file=os.path.basename(os.fspath(path)), format=format_name,
              sha1=sha1_file(path), size=os.path.getsize(path))


def check_finite(params: Mapping[str, Any], source: str) -> None:
  """Refuses weights holding NaN or infinity (a damaged or diverged file)."""
  for layer, leaves in params.items():
    for name, value in leaves.items():
      if not np.all(np.isfinite(value)):
        raise PortError(f"{source}: {layer}.{name} contains NaN or infinite"
                        " values; the file is damaged or the network"
                        " diverged.")
