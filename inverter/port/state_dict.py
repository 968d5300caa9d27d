"""Reading PyTorch state dicts: tensors by key, convolutions and batch norms
in our layout, each refused with a message naming the key when it does not
fit (shared by the torchvision ResNet and GoogLeNet converters)."""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from inverter.port import layout
from inverter.port.common import PortError


def get(state: Mapping[str, Any], key: str, where: str) -> np.ndarray:
  """The tensor under `key` as float32, or an error naming it."""
  if key not in state:
    raise PortError(f"{where} lacks {key}; it is not a complete torchvision"
                    " network.")
  return np.asarray(state[key], np.float32)


def batch_norm(state: Mapping[str, Any], key: str, width: int,
               where: str) -> dict[str, Any]:
  """A BatchNorm2d's weight, bias, running_mean, running_var -> our scale,
  bias, mean, var."""
  out = {}
  for ours, theirs in (("scale", "weight"), ("bias", "bias"),
                       ("mean", "running_mean"), ("var", "running_var")):
    out[ours] = layout.bias(get(state, f"{key}.{theirs}", where), width,
                            f"{where}: {key}.{theirs}")
  if np.any(out["var"] < 0):
    raise PortError(f"{where}: {key}.running_var has negative entries.")
  return out


def conv(state: Mapping[str, Any], key: str, kernel: int, channels: int,
         where: str) -> np.ndarray:
  """`key`.weight [out, in, k, k] -> an HWIO kernel, checked to be
  kernel x kernel over `channels` inputs."""
  k = layout.conv_kernel(get(state, f"{key}.weight", where),
                         f"{where}: {key}")
  if k.shape[:3] != (kernel, kernel, channels):
    raise PortError(
        f"{where}: {key}.weight is {k.shape[0]}x{k.shape[1]} over"
        f" {k.shape[2]} channels; the network has {kernel}x{kernel} over"
        f" {channels} there.")
  return k


def refuse_unknown(state: Mapping[str, Any], known: re.Pattern, network: str,
                   where: str) -> None:
  """PortError naming the first keys of `state` that `known` does not match."""
  unknown = sorted(k for k in state if not known.match(k))
  if unknown:
    raise PortError(
        f"{where} has keys {network} does not have:"
        f" {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}.")
