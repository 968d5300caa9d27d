"""bvlc_googlenet.caffemodel (BVLC/caffe models/bvlc_googlenet) ->
inverter's `googlenet` encoder.

Registers with the caffemodel format (`caffe.register_caffe_net`) for a net
with an `inception_3a/1x1` convolution. Layers are read by their names
(Caffe's '/' becomes '_' in ours, inverter/models/googlenet.py):
  * conv1/7x7_s2 (7x7/2 pad 3), conv2/3x3_reduce, conv2/3x3 and in every
    inception module 1x1, 3x3_reduce, 3x3 (pad 1), 5x5_reduce, 5x5 (pad 2),
    pool_proj: OIHW -> HWIO, biases; kernel, stride and pad are checked;
  * the LRNs pool1/norm1 (after pool1) and conv2/norm2 (before pool2), the
    3x3/2 max-pools pool1..pool4 (Caffe rounds up), each module's 3x3/1
    pool with pad 1, the Concat order (1x1, 3x3, 5x5, pool_proj) and pool5
    averaging the whole last map are checked against the network;
  * loss3/classifier (InnerProduct) becomes `logits`.
The auxiliary classifiers (loss1/*, loss2/*) of the training net are not
part of the deployed forward pass and are skipped, with a note. Widths and
the class count come from the shapes, so reduced copies convert too. Input:
BGR 0-255 minus (104, 117, 123) (train_val.prototxt's mean_value), or
--mean.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from inverter import presets
from inverter.models import googlenet
from inverter.port import caffe, caffemodel, common
from inverter.port.common import PortError, Ported

ARCH = googlenet.CAFFE_ARCH
DEFAULT_INPUT_SIZE = 224
_spatial = caffe._spatial  # pylint: disable=protected-access
_blob = caffe._blob  # pylint: disable=protected-access
# Caffe names of an inception module's convolutions: (suffix, kernel, pad).
_BRANCHES = (("1x1", 1, 0), ("3x3_reduce", 1, 0), ("3x3", 3, 1),
             ("5x5_reduce", 1, 0), ("5x5", 5, 2), ("pool_proj", 1, 0))


def is_googlenet(net: caffemodel.Net) -> bool:
  return any(l.name == "inception_3a/1x1" and l.type == "Convolution"
             for l in net.layers)


class _Reader:
  """The named layers of one file, with checks that name the layer."""

  def __init__(self, net: caffemodel.Net, path: str):
    self.by_name = {l.name: l for l in net.layers}
    self.path = path

  def layer(self, name: str, kind: str) -> caffemodel.Layer:
    layer = self.by_name.get(name)
    if layer is None or layer.type != kind:
      raise PortError(
          f"{self.path}: expected a {kind} layer named {name!r} (BVLC's"
          f" GoogLeNet); found {None if layer is None else layer.type}.")
    return layer

  def conv(self, name: str, inputs: int, kernel: int, stride: int,
           pad: int) -> dict[str, np.ndarray]:
    layer = self.layer(name, "Convolution")
    where = f"{self.path}: layer {name!r}"
    p = layer.param("convolution_param")
    got = (_spatial(p, "kernel_size", None, where),
           _spatial(p, "stride", 1, where), _spatial(p, "pad", 0, where))
    if got != (kernel, stride, pad) or int(p["group"]) != 1 or not (
        p["bias_term"]):
      raise PortError(f"{where}: kernel/stride/pad {got}, group {p['group']},"
                      f" bias {p['bias_term']}; GoogLeNet has"
                      f" {(kernel, stride, pad)}, group 1, with bias.")
    width = int(p["num_output"] or 0)
    weight = _blob(layer, 0, (width, inputs, kernel, kernel), self.path)
    return {"kernel": np.ascontiguousarray(weight.transpose(2, 3, 1, 0)),
            "bias": _blob(layer, 1, (width,), self.path).copy()}

  def pool(self, name: str, method: int, kernel: int, stride: int, pad: int,
           bottom: str) -> None:
    layer = self.layer(name, "Pooling")
    p = layer.param("pooling_param")
    got = (p["pool"], _spatial(p, "kernel_size", None, name),
           _spatial(p, "stride", 1, name), _spatial(p, "pad", 0, name))
    if got != (method, kernel, stride, pad) or layer.bottom != [bottom]:
      raise PortError(
          f"{self.path}: layer {name!r} pools (method, kernel, stride, pad)"
          f" {got} from {layer.bottom}; GoogLeNet pools"
          f" {(method, kernel, stride, pad)} from [{bottom!r}].")

  def lrn(self, name: str, bottom: str) -> None:
    layer = self.layer(name, "LRN")
    p = layer.param("lrn_param")
    got = (p["local_size"], caffe.float32_value(p["alpha"]),
           caffe.float32_value(p["beta"]), caffe.float32_value(p["k"]),
           p["norm_region"])
    want = tuple(googlenet.LRN.values()) + (0,)
    if got != want or layer.bottom != [bottom]:
      raise PortError(
          f"{self.path}: layer {name!r} is an LRN {got} of {layer.bottom};"
          f" GoogLeNet has (size, alpha, beta, k, region) {want} of"
          f" [{bottom!r}].")


def convert_googlenet(net: caffemodel.Net, path: str,
                      options: Mapping[str, Any]) -> Ported:
  read = _Reader(net, path)
  params: dict[str, Any] = {}
  params["conv1"] = read.conv("conv1/7x7_s2", 3, 7, 2, 3)
  w1 = params["conv1"]["kernel"].shape[3]
  read.pool("pool1/3x3_s2", 0, 3, 2, 0, "conv1/7x7_s2")
  read.lrn("pool1/norm1", "pool1/3x3_s2")
  params["conv2_reduce"] = read.conv("conv2/3x3_reduce", w1, 1, 1, 0)
  w2r = params["conv2_reduce"]["kernel"].shape[3]
  params["conv2"] = read.conv("conv2/3x3", w2r, 3, 1, 1)
  w2 = params["conv2"]["kernel"].shape[3]
  read.lrn("conv2/norm2", "conv2/3x3")
  read.pool("pool2/3x3_s2", 0, 3, 2, 0, "conv2/norm2")
  channels, bottom, modules = w2, "pool2/3x3_s2", []
  for module in googlenet.MODULES:
    name = f"inception_{module}"
    widths, inputs = [], {}
    for branch, kernel, pad in _BRANCHES:
      source = inputs.get(branch, channels)
      params[f"{name}_{branch}"] = read.conv(f"{name}/{branch}", source,
                                             kernel, 1, pad)
      width = params[f"{name}_{branch}"]["kernel"].shape[3]
      widths.append(int(width))
      if branch.endswith("_reduce"):
        inputs[branch[:3]] = width
    read.pool(f"{name}/pool", 0, 3, 1, 1, bottom)
    concat = read.layer(f"{name}/output", "Concat")
    order = [f"{name}/{b}" for b in ("1x1", "3x3", "5x5", "pool_proj")]
    if concat.bottom != order:
      raise PortError(f"{path}: {name}/output concatenates {concat.bottom};"
                      f" GoogLeNet concatenates {order}.")
    modules.append(tuple(widths))
    channels = widths[0] + widths[2] + widths[4] + widths[5]
    bottom = f"{name}/output"
    if module in ("3b", "4e"):
      pool = f"pool{module[0]}/3x3_s2"
      read.pool(pool, 0, 3, 2, 0, bottom)
      bottom = pool

  cfg = presets.encoder_config(ARCH)
  cfg.input_size = int(options.get("input_size") or DEFAULT_INPUT_SIZE)
  cfg.stem_widths = (int(w1), int(w2r), int(w2))
  cfg.inception_widths = tuple(modules)
  from inverter.models import encoders  # pylint: disable=g-import-not-at-top
  last = encoders.tap_shapes(googlenet.from_config(cfg))["inception_5b"][0]
  caffe.check_global_average_pool(read.layer("pool5/7x7_s1", "Pooling"),
                                  last, cfg.input_size, path)
  params["logits"] = caffe.classifier(
      read.layer("loss3/classifier", "InnerProduct"), channels, path)
  cfg.num_classes = int(params["logits"]["kernel"].shape[1])
  common.check_finite(params, path)
  skipped = sorted(name for name in read.by_name
                   if name.startswith(("loss1/", "loss2/")))
  warnings = ([f"Skipped the auxiliary classifiers ({len(skipped)} layers:"
               f" {', '.join(skipped[:4])}{' ...' if len(skipped) > 4 else ''}"
               "): they are not part of the deployed forward pass."]
              if skipped else [])
  preprocessing, extra = caffe.caffe_preprocessing(options, cfg)
  source = common.source_info(path, "caffemodel")
  source.update(net_name=net.name, arch=ARCH)
  return Ported(encoder=cfg, params=params, preprocessing=preprocessing,
                source=source, extra_files=extra, warnings=warnings)


caffe.register_caffe_net(caffe.CaffeNet("GoogLeNet (Caffe)", is_googlenet,
                                        convert_googlenet))
