"""torchvision GoogLeNet state dicts (googlenet-1378be20.pth) -> our encoder.

Keys -> our parameter names (inverter/models/googlenet.py):

  conv1.conv.weight, conv1.bn.*               conv1, conv1_bn
  conv2.*, conv3.*                            conv2_reduce, conv2 (+ _bn)
  inception{M}.branch1.*                      inception_{M}_1x1
  inception{M}.branch2.{0,1}.*                inception_{M}_3x3_reduce, _3x3
  inception{M}.branch3.{0,1}.*                inception_{M}_5x5_reduce, _5x5
                                              (a 3x3 kernel in this file)
  inception{M}.branch4.1.*                    inception_{M}_pool_proj
  fc.weight, fc.bias                          logits

Each BasicConv2d is a conv without bias (OIHW -> HWIO) and a batch norm
(weight, bias, running_mean, running_var -> scale, bias, mean, var). The
auxiliary classifiers (aux1.*, aux2.*), not part of the forward pass, are
skipped. Widths and the class count come from the shapes, so reduced copies
convert too.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from inverter import presets
from inverter.models import googlenet
from inverter.port import layout, state_dict
from inverter.port.common import PortError

ARCH = googlenet.TORCHVISION_ARCH
_MODULE_KEYS = {"3a": "inception3a", "3b": "inception3b", "4a": "inception4a",
                "4b": "inception4b", "4c": "inception4c", "4d": "inception4d",
                "4e": "inception4e", "5a": "inception5a", "5b": "inception5b"}
# Our branch names -> torchvision's BasicConv2d keys, with kernel sizes.
_BRANCHES = (("1x1", "branch1", 1), ("3x3_reduce", "branch2.0", 1),
             ("3x3", "branch2.1", 3), ("5x5_reduce", "branch3.0", 1),
             ("5x5", "branch3.1", 3), ("pool_proj", "branch4.1", 1))
_KNOWN = re.compile(
    r"^((conv[123]|inception\d[a-e]\.branch(1|[23]\.[01]|4\.1))\."
    r"(conv\.weight|bn\.(weight|bias|running_mean|running_var|"
    r"num_batches_tracked))|fc\.(weight|bias)|aux[12]\..*)$")


def is_network(state: Mapping[str, Any]) -> bool:
  return "inception3a.branch1.conv.weight" in state


def _basic_conv(state, key: str, name: str, kernel: int, channels: int,
                params: dict[str, Any], where: str) -> int:
  """Converts BasicConv2d `key` into params[name], params[name_bn]; returns
  its width."""
  k = state_dict.conv(state, f"{key}.conv", kernel, channels, where)
  params[name] = {"kernel": k}
  params[f"{name}_bn"] = state_dict.batch_norm(state, f"{key}.bn",
                                               k.shape[3], where)
  return int(k.shape[3])


def convert_state_dict(state: Mapping[str, Any], where: str = "state",
                       input_size: int | None = None
                       ) -> tuple[str, Any, dict[str, Any]]:
  """(arch, encoder config block, Flax params) for torchvision GoogLeNet."""
  state_dict.refuse_unknown(state, _KNOWN, "torchvision's GoogLeNet", where)
  params: dict[str, Any] = {}
  w1 = _basic_conv(state, "conv1", "conv1", 7, 3, params, where)
  w2r = _basic_conv(state, "conv2", "conv2_reduce", 1, w1, params, where)
  w2 = _basic_conv(state, "conv3", "conv2", 3, w2r, params, where)
  channels, modules = w2, []
  for module, key in _MODULE_KEYS.items():
    widths, inputs = [], {"3x3": None, "5x5": None}
    for branch, sub, kernel in _BRANCHES:
      source = (inputs["3x3"] if branch == "3x3" else
                inputs["5x5"] if branch == "5x5" else channels)
      width = _basic_conv(state, f"{key}.{sub}",
                          f"inception_{module}_{branch}", kernel, source,
                          params, where)
      widths.append(width)
      if branch.endswith("_reduce"):
        inputs[branch[:3]] = width
    modules.append(tuple(widths))
    channels = widths[0] + widths[2] + widths[4] + widths[5]
  fc = layout.dense_kernel(state_dict.get(state, "fc.weight", where),
                           f"{where}: fc")
  if fc.shape[0] != channels:
    raise PortError(f"{where}: fc reads {fc.shape[0]} features; inception 5b"
                    f" gives {channels}.")
  params["logits"] = {"kernel": fc, "bias": layout.bias(
      state_dict.get(state, "fc.bias", where), fc.shape[1],
      f"{where}: fc.bias")}
  cfg = presets.encoder_config(ARCH)
  cfg.stem_widths = (w1, w2r, w2)
  cfg.inception_widths = tuple(modules)
  cfg.num_classes = int(fc.shape[1])
  if input_size:
    cfg.input_size = int(input_size)
  return ARCH, cfg, params
