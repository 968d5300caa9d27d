"""torchvision ResNet state dicts (.pth) -> our encoder format.

resnet50-0676ba61.pth (IMAGENET1K_V1) and resnet50-11ad3fa6.pth
(IMAGENET1K_V2) hold the same network under the same keys; reduced or
ResNet-18/34-style copies (basic blocks) convert too, their widths, blocks
and class count read from the shapes. Keys -> our parameter names
(inverter/models/resnet.py, Caffe's layer names):

  conv1.weight, bn1.*                        conv1, bn_conv1
  layer{S}.{B}.conv{1,2,3}.weight, bn{1,2,3}  res{S+1}{b}_branch2{a,b,c},
                                              bn{S+1}{b}_branch2{a,b,c}
  layer{S}.{B}.downsample.{0,1}.*            res{S+1}{b}_branch1, bn..._branch1
  fc.weight, fc.bias                         fc1000

Conv weights [out, in, h, w] become HWIO kernels, the fc weight [out, in]
becomes [in, out]; a batch norm's weight, bias, running_mean, running_var
become scale, bias, mean, var (num_batches_tracked is not needed).
"""

from __future__ import annotations

import re
import string
from typing import Any, Mapping

from inverter import presets
from inverter.models import resnet
from inverter.port import layout, state_dict
from inverter.port.common import PortError

ARCH = resnet.TORCHVISION_ARCH
_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")
_KNOWN = re.compile(
    r"^(conv1\.weight|bn1\.(weight|bias|running_mean|running_var|"
    r"num_batches_tracked)|fc\.(weight|bias)|layer\d+\.\d+\."
    r"(conv\d\.weight|bn\d\.(weight|bias|running_mean|running_var|"
    r"num_batches_tracked)|downsample\.0\.weight|downsample\.1\.(weight|bias|"
    r"running_mean|running_var|num_batches_tracked)))$")


def is_network(state: Mapping[str, Any]) -> bool:
  """Whether `state` has torchvision ResNet's keys (layer1.0.conv1...)."""
  return "layer1.0.conv1.weight" in state and "conv1.weight" in state


def convert_state_dict(state: Mapping[str, Any], where: str = "state",
                       input_size: int | None = None
                       ) -> tuple[str, Any, dict[str, Any]]:
  """(arch, encoder config block, Flax params) for a torchvision ResNet."""
  state_dict.refuse_unknown(state, _KNOWN, "torchvision's ResNet", where)
  counts: dict[int, int] = {}
  for key in state:
    if match := _BLOCK_KEY.match(key):
      stage, block = int(match.group(1)), int(match.group(2))
      counts[stage] = max(counts.get(stage, 0), block + 1)
  if sorted(counts) != [1, 2, 3, 4]:
    raise PortError(f"{where} has stages layer{sorted(counts)}; a ResNet has"
                     " layer1..layer4.")
  block_type = ("bottleneck" if "layer1.0.conv3.weight" in state
                else "basic")
  expansion = 4 if block_type == "bottleneck" else 1
  stem = state_dict.conv(state, "conv1", 7, 3, where)
  stem_width = stem.shape[3]
  params: dict[str, Any] = {
      "conv1": {"kernel": stem},
      "bn_conv1": state_dict.batch_norm(state, "bn1", stem_width, where)}
  widths, channels = [], stem_width
  convs = (("conv1", "2a", 1), ("conv2", "2b", 3), ("conv3", "2c", 1)) if (
      block_type == "bottleneck") else (("conv1", "2a", 3), ("conv2", "2b", 3))
  for stage in (1, 2, 3, 4):
    width = int(state_dict.get(state, f"layer{stage}.0.conv1.weight", where).shape[0])
    widths.append(width)
    for block in range(counts[stage]):
      key = f"layer{stage}.{block}"
      name = f"res{stage + 1}{string.ascii_lowercase[block]}"
      suffix = name[3:]
      inner = channels
      for i, (conv, branch, kernel) in enumerate(convs):
        out = width * expansion if i == len(convs) - 1 else width
        k = state_dict.conv(state, f"{key}.{conv}", kernel, inner, where)
        if k.shape[3] != out:
          raise PortError(f"{where}: {key}.{conv} has {k.shape[3]} outputs;"
                           f" this stage's blocks have {out}.")
        params[f"{name}_branch{branch}"] = {"kernel": k}
        params[f"bn{suffix}_branch{branch}"] = state_dict.batch_norm(
            state, f"{key}.bn{i + 1}", out, where)
        inner = out
      if f"{key}.downsample.0.weight" in state:
        params[f"{name}_branch1"] = {"kernel": state_dict.conv(
            state, f"{key}.downsample.0", 1, channels, where)}
        params[f"bn{suffix}_branch1"] = state_dict.batch_norm(
            state, f"{key}.downsample.1", width * expansion, where)
      elif block == 0 and (stage > 1 or channels != width * expansion):
        raise PortError(f"{where}: {key} changes the shape but has no"
                         " downsample (projection) weights.")
      channels = width * expansion
  fc = layout.dense_kernel(state_dict.get(state, "fc.weight", where), f"{where}: fc")
  if fc.shape[0] != channels:
    raise PortError(f"{where}: fc reads {fc.shape[0]} features; the last"
                     f" stage gives {channels}.")
  params["fc1000"] = {"kernel": fc, "bias": layout.bias(
      state_dict.get(state, "fc.bias", where), fc.shape[1], f"{where}: fc.bias")}
  cfg = presets.encoder_config(ARCH)
  cfg.stem_width = int(stem_width)
  cfg.widths = tuple(widths)
  cfg.blocks = tuple(counts[s] for s in (1, 2, 3, 4))
  cfg.block = block_type
  cfg.num_classes = int(fc.shape[1])
  if input_size:
    cfg.input_size = int(input_size)
  return ARCH, cfg, params
