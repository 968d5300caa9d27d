"""torchvision AlexNet and VGG-16 state dicts (.pth) -> our encoder format;
ResNet and GoogLeNet files are recognised here and handed on to
torchvision_resnet.py and torchvision_googlenet.py.

Reads the file with `torch_pickle` (no torch needed, no arbitrary code run),
recognises the network from its keys, and converts:
  * conv `features.N.weight` [out, in, h, w] -> HWIO kernels;
  * `classifier.N.weight` [out, in] -> [in, out]; the first one (fc6) reads
    the adaptive-pooled map flattened C, H, W, so its rows are reordered to
    our H, W, C.
Widths, class count and the adaptive pool size come from the shapes, so
reduced copies of the networks convert too.

  arch                  keys (conv / fc)
  torchvision_alexnet   features.{0,3,6,8,10} / classifier.{1,4,6}
  torchvision_vgg16     features.{0,2,5,7,10,12,14,17,19,21,24,26,28} /
                        classifier.{0,3,6}
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from inverter import presets
from inverter.models import vgg
from inverter.port import common, layout, torch_pickle
from inverter.port import torchvision_googlenet, torchvision_resnet
from inverter.port.common import PortError

ALEXNET = "torchvision_alexnet"
VGG16 = "torchvision_vgg16"

# (conv indices in `features`, fc indices in `classifier`), per arch.
KEY_LAYOUTS = {
    ALEXNET: ((0, 3, 6, 8, 10), (1, 4, 6)),
    VGG16: ((0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), (0, 3, 6)),
}
_ALEXNET_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
_CONV_NAMES = {ALEXNET: _ALEXNET_CONVS, VGG16: vgg.CONV_NAMES}
# Kernel sizes our modules build (conv1's is read from the file).
_ALEXNET_KERNELS = (None, 5, 3, 3, 3)

_KEY = re.compile(r"^(features|classifier)\.(\d+)\.(weight|bias)$")


def detect(state: Mapping[str, np.ndarray], where: str) -> str:
  """Which torchvision network `state` holds, or PortError saying why not."""
  if any(k.endswith("running_mean") for k in state):
    raise PortError(f"{where} is a batch-normalised network (e.g. vgg16_bn)"
                     " other than ResNet or GoogLeNet; only torchvision's"
                     " alexnet, vgg16, googlenet and resnet50 are"
                     " supported.")
  unknown = sorted(k for k in state if not _KEY.match(k))
  if unknown:
    raise PortError(
        f"{where} has keys torchvision's alexnet/vgg16 do not have:"
        f" {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}.")
  convs = tuple(sorted(int(_KEY.match(k).group(2)) for k in state
                       if k.startswith("features.") and k.endswith("weight")))
  fcs = tuple(sorted(int(_KEY.match(k).group(2)) for k in state
                     if k.startswith("classifier.") and k.endswith("weight")))
  for arch, (want_convs, want_fcs) in KEY_LAYOUTS.items():
    if (convs, fcs) == (want_convs, want_fcs):
      return arch
  raise PortError(
      f"{where} has {len(convs)} conv layers (features.{list(convs)}) and"
      f" {len(fcs)} fc layers (classifier.{list(fcs)}); that is neither"
      " torchvision's alexnet nor vgg16 (VGG-11/13/19 are not supported).")


def _get(state, key, where):
  if key not in state:
    raise PortError(f"{where} lacks {key}.")
  return np.asarray(state[key])


def convert_state_dict(state: Mapping[str, np.ndarray], where: str = "state",
                       input_size: int | None = None
                       ) -> tuple[str, Any, dict[str, Any]]:
  """(arch, encoder config block, Flax params) for a torchvision state dict."""
  for network in (torchvision_resnet, torchvision_googlenet):
    if network.is_network(state):
      return network.convert_state_dict(state, where, input_size)
  arch = detect(state, where)
  conv_idx, fc_idx = KEY_LAYOUTS[arch]
  params: dict[str, Any] = {}
  widths, channels = [], 3
  for i, (idx, name) in enumerate(zip(conv_idx, _CONV_NAMES[arch])):
    key = f"features.{idx}"
    w = _get(state, f"{key}.weight", where)
    kernel = layout.conv_kernel(w, f"{where}: {key} ({name})")
    kh, kw, cin, cout = kernel.shape
    want_k = 3 if arch == VGG16 else _ALEXNET_KERNELS[i] or kh
    if (kh, kw) != (want_k, want_k) or cin != channels:
      raise PortError(
          f"{where}: {key} ({name}) has a {kh}x{kw} kernel over {cin} input"
          f" channels; expected {want_k}x{want_k} over {channels}.")
    params[name] = dict(kernel=kernel, bias=layout.bias(
        _get(state, f"{key}.bias", where), cout, f"{where}: {key}"))
    widths.append(cout)
    channels = cout
  fc6, fc7, fc8 = (f"classifier.{i}" for i in fc_idx)
  kernel6, side = layout.first_dense_kernel(
      _get(state, f"{fc6}.weight", where), channels, f"{where}: {fc6} (fc6)")
  fc_width = kernel6.shape[1]
  kernel7 = layout.dense_kernel(_get(state, f"{fc7}.weight", where),
                                f"{where}: {fc7}")
  kernel8 = layout.dense_kernel(_get(state, f"{fc8}.weight", where),
                                f"{where}: {fc8}")
  if kernel7.shape != (fc_width, fc_width) or kernel8.shape[0] != fc_width:
    raise PortError(
        f"{where}: fc6 has {fc_width} outputs but fc7/fc8 weights are"
        f" {kernel7.shape[::-1]}/{kernel8.shape[::-1]} ([out, in]); fc6 and"
        " fc7 must have the same width.")
  for name, key, kernel in (("fc6", fc6, kernel6), ("fc7", fc7, kernel7),
                            ("fc8", fc8, kernel8)):
    params[name] = dict(kernel=kernel, bias=layout.bias(
        _get(state, f"{key}.bias", where), kernel.shape[1], f"{where}: {key}"))

  cfg = presets.encoder_config(arch)
  if arch == VGG16:
    blocks, start = [], 0
    for depth in vgg.BLOCK_DEPTHS:
      block = widths[start:start + depth]
      if len(set(block)) != 1:
        raise PortError(f"{where}: the convolutions of one VGG block"
                         f" differ in width: {block}.")
      blocks.append(block[0])
      start += depth
    cfg.widths = tuple(blocks)
  else:
    cfg.widths = tuple(widths)
    cfg.conv1_kernel = int(params["conv1"]["kernel"].shape[0])
  cfg.fc_width = int(fc_width)
  cfg.num_classes = int(kernel8.shape[1])
  cfg.avgpool_size = int(side)
  if input_size:
    cfg.input_size = int(input_size)
  return arch, cfg, params


def convert(path: str, options: Mapping[str, Any]) -> common.Ported:
  """Format.convert: a torchvision .pth file -> Ported."""
  where = os.fspath(path)
  state = torch_pickle.load_state_dict(path)
  arch, cfg, params = convert_state_dict(state, where,
                                         options.get("input_size"))
  wanted = options.get("arch")
  if wanted and wanted != arch:
    raise PortError(f"{where} holds {arch}, not --arch={wanted}.")
  pre = dict(cfg.preprocessing.to_dict(), input_size=int(cfg.input_size))
  pre = {k: list(v) if isinstance(v, tuple) else v for k, v in pre.items()}
  source = common.source_info(path, FORMAT.name)
  source["arch"] = arch
  common.check_finite(params, where)
  return common.Ported(encoder=cfg, params=params, preprocessing=pre,
                       source=source)


FORMAT = common.register(common.Format(
    name="torchvision", sniff=torch_pickle.sniff, convert=convert))
