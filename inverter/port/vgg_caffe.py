"""VGG_ILSVRC_16_layers.caffemodel (the VGG authors' Caffe release) ->
inverter's `vgg16` encoder.

Registers with the caffemodel format's extension point
(`caffe.register_caffe_net`), so `python -m inverter.port FILE.caffemodel`
recognises a net of thirteen convolutions and three inner products:
  * conv kernels OIHW -> HWIO; every conv must be 3x3, stride 1, pad 1,
    ungrouped, and every pool a 2x2/2 max-pool (Caffe rounds up);
  * fc6 reads pool5 flattened C, H, W; its rows are reordered to our H, W, C.
    pool5's side follows from the input size (7 at 224); a file whose fc6
    does not fit is refused with the input sizes that would fit;
  * block widths, fc width and class count come from the shapes, so reduced
    copies convert too.
Input convention: BGR 0-255 minus the authors' mean (103.939, 116.779,
123.68), or --mean.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from inverter import presets
from inverter.models import vgg
from inverter.port import caffe, caffemodel, common, layout
from inverter.port.common import PortError, Ported

ARCH = vgg.CAFFE_ARCH
DEFAULT_INPUT_SIZE = 224

_OP_CODES = {"Convolution": "C", "ReLU": "R", "Pooling": "P",
             "InnerProduct": "I", "Softmax": "S"}
# The deployed forward pass: (conv relu) x depth, pool, per block; then
# fc6 relu fc7 relu fc8.
ORDER = "".join("CR" * d + "P" for d in vgg.BLOCK_DEPTHS) + "IRIRI"
_WEIGHTS_ONLY = "C" * len(vgg.CONV_NAMES) + "III"
# The Caffe AlexNet converter's blob and parameter readers, shared.
_spatial = caffe._spatial  # pylint: disable=protected-access
_blob = caffe._blob  # pylint: disable=protected-access
_bias = caffe._bias  # pylint: disable=protected-access

def is_vgg16(net: caffemodel.Net) -> bool:
  """Thirteen convolutions then three inner products."""
  return "".join(_OP_CODES[l.type] for l in net.by_type(
      "Convolution", "InnerProduct")) == _WEIGHTS_ONLY


def pool5_size(input_size: int) -> int:
  """pool5's side: five 2x2/2 max-pools, each rounding up (Caffe)."""
  size = input_size
  for _ in vgg.BLOCK_DEPTHS:
    size = -(-size // 2)
  return size


def _forward_layers(net: caffemodel.Net, path: str) -> list[caffemodel.Layer]:
  out = caffe.forward_layers(net, path, "VGG-16", _OP_CODES)
  codes = "".join(_OP_CODES[l.type] for l in out)
  if codes not in (ORDER, _WEIGHTS_ONLY):
    raise PortError(
        f"{path}: layer order {codes} (C conv, R relu, P pool, I inner"
        f" product) is not VGG-16's {ORDER}. Its layers: {net.summary()}")
  return out


def _check_layer(layer: caffemodel.Layer, path: str) -> None:
  where = f"{path}: layer {layer.name!r}"
  if layer.type == "ReLU":
    if layer.param("relu_param")["negative_slope"] != 0:
      raise PortError(f"{where}: leaky ReLU is not VGG-16's ReLU.")
  elif layer.type == "Pooling":
    p = layer.param("pooling_param")
    got = (_spatial(p, "kernel_size", None, where),
           _spatial(p, "stride", 1, where),
           _spatial(p, "pad", 0, where))
    if p["pool"] != 0 or p["global_pooling"] or got != (2, 2, 0):
      raise PortError(f"{where}: pooling (method {p['pool']}, kernel/stride/"
                      f"pad {got}) is not VGG-16's 2x2/2 max-pooling.")
  elif layer.type == "Convolution":
    p = layer.param("convolution_param")
    got = (_spatial(p, "kernel_size", None, where),
           _spatial(p, "stride", 1, where),
           _spatial(p, "pad", 0, where))
    if (got != (3, 1, 1) or int(p["group"]) != 1
        or any(d != 1 for d in p["dilation"]) or p["axis"] != 1):
      raise PortError(f"{where}: convolution kernel/stride/pad {got}, group"
                      f" {p['group']}; VGG-16 uses 3x3, stride 1, pad 1,"
                      " ungrouped.")


def _input_size_hint(in_features: int, width5: int) -> str:
  sizes = [n for n in range(1, 1025)
           if width5 * pool5_size(n) ** 2 == in_features]
  if not sizes:
    return "no input size gives that; the file is not a consistent VGG-16."
  best = min(sizes, key=lambda n: abs(n - DEFAULT_INPUT_SIZE))
  return (f"Input sizes {sizes[0]} to {sizes[-1]} give that; pass e.g."
          f" --input_size {best}.")


def convert_vgg16(net: caffemodel.Net, path: str,
                  options: Mapping[str, Any]) -> Ported:
  """Converts a Caffe VGG-16 (see the module docstring)."""
  if options.get("arch") not in (None, "", ARCH):
    raise PortError(f"{path} holds VGG-16 (arch {ARCH}), not"
                    f" --arch={options['arch']}.")
  forward = _forward_layers(net, path)
  warnings = []
  if "P" not in "".join(_OP_CODES[l.type] for l in forward):
    warnings.append("The file holds only the weight layers; VGG-16's ReLUs"
                    " and 2x2/2 max-pooling are assumed.")
  for layer in forward:
    _check_layer(layer, path)

  params: dict[str, dict[str, np.ndarray]] = {}
  widths, in_width = [], 3
  for name, layer in zip(vgg.CONV_NAMES, net.by_type("Convolution")):
    p = layer.param("convolution_param")
    width = int(p["num_output"] or 0)
    if not width:
      raise PortError(f"{path}: layer {layer.name!r} ({name}): num_output is"
                      " not set.")
    weight = _blob(layer, 0, (width, in_width, 3, 3), path)
    params[name] = dict(
        kernel=layout.conv_kernel(weight, f"{path}: {layer.name}"),
        bias=_bias(layer, p["bias_term"], width, path))
    widths.append(width)
    in_width = width
  blocks, start = [], 0
  for b, depth in enumerate(vgg.BLOCK_DEPTHS):
    block = widths[start:start + depth]
    if len(set(block)) != 1:
      raise PortError(f"{path}: block {b + 1}'s convolutions differ in width"
                      f" ({block}); VGG-16 uses one width per block.")
    blocks.append(block[0])
    start += depth

  input_size = int(options.get("input_size") or DEFAULT_INPUT_SIZE)
  side = pool5_size(input_size)
  in_features = widths[-1] * side * side
  fc_out = []
  for j, layer in enumerate(net.by_type("InnerProduct"), start=6):
    where = f"{path}: layer {layer.name!r} (fc{j})"
    p = layer.param("inner_product_param")
    if p["axis"] != 1:
      raise PortError(f"{where}: axis {p['axis']}; VGG-16's fc layers use 1.")
    out = int(p["num_output"] or 0)
    if not out:
      raise PortError(f"{where}: num_output is not set.")
    stored = layer.blobs[0].size if layer.blobs else 0
    if j == 6 and stored != out * in_features:
      per = stored // out if out else 0
      raise PortError(
          f"{where} has {per} inputs per output; with --input_size"
          f" {input_size} pool5 is {side}x{side}x{widths[-1]} ="
          f" {in_features}. " + _input_size_hint(per, widths[-1]))
    shape = (in_features, out) if p["transpose"] else (out, in_features)
    weight = _blob(layer, 0, shape, path)
    if p["transpose"]:
      weight = weight.T  # -> [out, in], the layout the helpers take.
    if j == 6:
      kernel, _ = layout.first_dense_kernel(weight, widths[-1], where)
    else:
      kernel = layout.dense_kernel(weight, where)
    params[f"fc{j}"] = dict(kernel=kernel,
                            bias=_bias(layer, p["bias_term"], out, path))
    fc_out.append(out)
    in_features = out
  if fc_out[0] != fc_out[1]:
    raise PortError(f"{path}: fc6 has {fc_out[0]} outputs and fc7"
                    f" {fc_out[1]}; the module uses one fc width.")
  common.check_finite(params, path)

  cfg = presets.encoder_config(ARCH)
  cfg.input_size = input_size
  cfg.widths = tuple(blocks)
  cfg.fc_width = fc_out[0]
  cfg.num_classes = fc_out[2]
  preprocessing, extra = caffe.caffe_preprocessing(options, cfg)
  source = common.source_info(path, "caffemodel")
  source.update(net_name=net.name, arch=ARCH, layer_format=(
      "V1LayerParameter (layers)" if net.legacy else "LayerParameter (layer)"))
  return Ported(encoder=cfg, params=params, preprocessing=preprocessing,
                source=source, extra_files=extra, warnings=warnings)


caffe.register_caffe_net(caffe.CaffeNet("VGG-16", is_vgg16, convert_vgg16))
