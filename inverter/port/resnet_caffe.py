"""ResNet-50-model.caffemodel (KaimingHe/deep-residual-networks) ->
inverter's `caffe_resnet50` encoder.

Registers with the caffemodel format (`caffe.register_caffe_net`) for a net
with a `res2a_branch2a` convolution. Layers are read by their names, which
are ours too (inverter/models/resnet.py):
  * conv1 (with bias), res{S}{b}_branch{2a,2b,2c,1} (without): OIHW ->
    HWIO; kernel, stride and pad are checked against the network (the stride
    on branch2a and branch1 of each stage's first block);
  * bn..., a BatchNorm with use_global_stats: blobs mean, variance and a
    moving-average factor; mean and variance are divided by the factor as
    Caffe does (batch_norm_layer.cpp), eps must be 1e-5;
  * scale..., the Scale (with bias) after each BatchNorm: its gamma and beta
    become the batch norm's scale and bias;
  * pool1 must be a 3x3/2 max-pool without padding (Caffe rounds up), pool5
    an average over the whole last map, fc1000 an inner product.
Stage and block counts and widths come from the names and shapes, so
reduced copies convert too (bottleneck blocks, as in every ResNet the
authors released). Input: BGR
0-255 minus the authors' mean image (ResNet_mean.binaryproto; give it with
--mean to use the image itself, else its per-channel average).
"""

from __future__ import annotations

import re
import string
from typing import Any, Mapping

import numpy as np

from inverter import presets
from inverter.models import resnet
from inverter.port import caffe, caffemodel, common
from inverter.port.common import PortError, Ported

ARCH = resnet.CAFFE_ARCH
DEFAULT_INPUT_SIZE = 224
_CONV_NAME = re.compile(r"^res(\d)([a-z])_branch(2a|2b|2c|1)$")
_spatial = caffe._spatial  # pylint: disable=protected-access
_blob = caffe._blob  # pylint: disable=protected-access


def is_resnet(net: caffemodel.Net) -> bool:
  return any(l.name == "res2a_branch2a" and l.type == "Convolution"
             for l in net.layers)


def _layer(by_name: Mapping[str, caffemodel.Layer], name: str, kind: str,
           path: str) -> caffemodel.Layer:
  layer = by_name.get(name)
  if layer is None or layer.type != kind:
    raise PortError(f"{path}: expected a {kind} layer named {name!r} (the"
                    " deploy network of the authors' ResNet); found"
                    f" {None if layer is None else layer.type}.")
  return layer


def _conv(layer: caffemodel.Layer, inputs: int, geometry: tuple[int, int, int],
          bias: bool, path: str) -> dict[str, np.ndarray]:
  where = f"{path}: layer {layer.name!r}"
  p = layer.param("convolution_param")
  got = (_spatial(p, "kernel_size", None, where),
         _spatial(p, "stride", 1, where), _spatial(p, "pad", 0, where))
  if got != geometry or int(p["group"]) != 1 or bool(p["bias_term"]) != bias:
    raise PortError(
        f"{where}: kernel/stride/pad {got}, group {p['group']}, bias"
        f" {p['bias_term']}; this ResNet layer has {geometry}, group 1, bias"
        f" {bias}.")
  width, k = int(p["num_output"] or 0), geometry[0]
  kernel = _blob(layer, 0, (width, inputs, k, k), path)
  out = {"kernel": np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))}
  if bias:
    out["bias"] = _blob(layer, 1, (width,), path).copy()
  return out


def _batch_norm(by_name, bn: str, scale: str, width: int,
                path: str) -> dict[str, np.ndarray]:
  norm = _layer(by_name, bn, "BatchNorm", path)
  p = norm.param("batch_norm_param")
  if not np.isclose(p["eps"], resnet.BN_EPS):
    raise PortError(f"{path}: layer {bn!r} has eps {p['eps']}; the network"
                    f" uses {resnet.BN_EPS}.")
  factor = float(_blob(norm, 2, (1,), path)[0])
  # Caffe: statistics are stored times the moving-average factor.
  correction = 0.0 if factor == 0 else 1.0 / factor
  mean = _blob(norm, 0, (width,), path) * correction
  var = _blob(norm, 1, (width,), path) * correction
  affine = _layer(by_name, scale, "Scale", path)
  if not affine.param("scale_param")["bias_term"]:
    raise PortError(f"{path}: layer {scale!r} has no bias term; every Scale"
                    " after a BatchNorm in this ResNet has one.")
  return {"scale": _blob(affine, 0, (width,), path).copy(),
          "bias": _blob(affine, 1, (width,), path).copy(),
          "mean": mean.astype(np.float32), "var": var.astype(np.float32)}


def _pool(by_name, name: str, path: str) -> dict[str, Any]:
  return _layer(by_name, name, "Pooling", path).param("pooling_param")


def convert_resnet(net: caffemodel.Net, path: str,
                   options: Mapping[str, Any]) -> Ported:
  by_name = {l.name: l for l in net.layers}
  blocks: dict[int, set[str]] = {}
  branches: set[str] = set()
  for layer in net.by_type("Convolution"):
    if match := _CONV_NAME.match(layer.name):
      blocks.setdefault(int(match.group(1)), set()).add(match.group(2))
      branches.add(match.group(3))
    elif layer.name != "conv1":
      raise PortError(f"{path}: convolution {layer.name!r} is not part of"
                      " the authors' ResNet (conv1, res{S}{b}_branch...).")
  if sorted(blocks) != [2, 3, 4, 5]:
    raise PortError(f"{path}: stages res{sorted(blocks)}; a ResNet has"
                    " res2..res5.")
  counts = []
  for s in (2, 3, 4, 5):
    letters = sorted(blocks[s])
    if letters != list(string.ascii_lowercase[:len(letters)]):
      raise PortError(f"{path}: stage res{s} has blocks {letters}.")
    counts.append(len(letters))
  if "2c" not in branches:
    raise PortError(f"{path}: no res..._branch2c convolutions; the authors'"
                    " Caffe ResNets have bottleneck blocks (2a, 2b, 2c).")

  conv1 = _layer(by_name, "conv1", "Convolution", path)
  stem_width = int(conv1.param("convolution_param")["num_output"] or 0)
  params: dict[str, Any] = {
      "conv1": _conv(conv1, 3, (7, 2, 3), True, path),
      "bn_conv1": _batch_norm(by_name, "bn_conv1", "scale_conv1", stem_width,
                              path)}
  pool1 = _pool(by_name, "pool1", path)
  if (pool1["pool"], _spatial(pool1, "kernel_size", None, path),
      _spatial(pool1, "stride", 1, path), _spatial(pool1, "pad", 0, path)) != (
          0, 3, 2, 0):
    raise PortError(f"{path}: pool1 must be a 3x3/2 max-pool without"
                    " padding, as in the authors' ResNet.")
  widths, channels = [], stem_width
  for s, count in zip((2, 3, 4, 5), counts):
    first = _layer(by_name, f"res{s}a_branch2a", "Convolution", path)
    width = int(first.param("convolution_param")["num_output"] or 0)
    widths.append(width)
    for b in range(count):
      name = f"res{s}{string.ascii_lowercase[b]}"
      suffix = name[3:]
      stride = 2 if b == 0 and s > 2 else 1
      units = [("2a", width, 1, stride), ("2b", width, 3, 1),
               ("2c", width * 4, 1, 1)]
      inputs = channels
      for branch, out, kernel, st in units:
        layer = _layer(by_name, f"{name}_branch{branch}", "Convolution", path)
        params[f"{name}_branch{branch}"] = _conv(
            layer, inputs, (kernel, st, (kernel - 1) // 2), False, path)
        params[f"bn{suffix}_branch{branch}"] = _batch_norm(
            by_name, f"bn{suffix}_branch{branch}",
            f"scale{suffix}_branch{branch}", out, path)
        inputs = out
      if f"{name}_branch1" in by_name:
        layer = _layer(by_name, f"{name}_branch1", "Convolution", path)
        params[f"{name}_branch1"] = _conv(layer, channels, (1, stride, 0),
                                          False, path)
        params[f"bn{suffix}_branch1"] = _batch_norm(
            by_name, f"bn{suffix}_branch1", f"scale{suffix}_branch1",
            width * 4, path)
      elif b == 0 and (stride != 1 or channels != width * 4):
        raise PortError(f"{path}: {name} changes the shape but has no"
                        " branch1 (projection).")
      channels = width * 4

  cfg = presets.encoder_config(ARCH)
  cfg.input_size = int(options.get("input_size") or DEFAULT_INPUT_SIZE)
  cfg.stem_width, cfg.widths, cfg.blocks = stem_width, tuple(widths), tuple(
      counts)
  cfg.block = "bottleneck"
  from inverter.models import encoders  # pylint: disable=g-import-not-at-top
  last = encoders.tap_shapes(resnet.from_config(cfg))["res5"][0]
  caffe.check_global_average_pool(_layer(by_name, "pool5", "Pooling", path),
                                  last, cfg.input_size, path)
  params["fc1000"] = caffe.classifier(
      _layer(by_name, "fc1000", "InnerProduct", path), channels, path)
  cfg.num_classes = int(params["fc1000"]["kernel"].shape[1])
  common.check_finite(params, path)
  preprocessing, extra = caffe.caffe_preprocessing(options, cfg)
  source = common.source_info(path, "caffemodel")
  source.update(net_name=net.name, arch=ARCH)
  return Ported(encoder=cfg, params=params, preprocessing=preprocessing,
                source=source, extra_files=extra)


caffe.register_caffe_net(caffe.CaffeNet("ResNet (Caffe)", is_resnet,
                                        convert_resnet))
