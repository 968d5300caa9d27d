"""Test helper: writes real Caffe protobuf files, independently of our reader.

The message classes are built at test time with the protobuf library from a
FileDescriptorProto that restates the needed part of Caffe's caffe.proto
(BVLC/caffe src/caffe/proto/caffe.proto): same message names, field numbers,
types and packing. Files serialised with them are what Caffe writes, so
reading them back tests `inverter.port.caffemodel` against protobuf itself
rather than against its own assumptions.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_TYPES = {
    "string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL, "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
}

# V1LayerParameter.LayerType values used here (caffe.proto).
V1_TYPES = {"Convolution": 4, "Data": 5, "Dropout": 6, "InnerProduct": 14,
            "LRN": 15, "Pooling": 17, "ReLU": 18, "Softmax": 20,
            "SoftmaxWithLoss": 21, "Split": 22, "Accuracy": 1, "Concat": 3,
            "Eltwise": 25}

# (message, [(name, number, type or message/enum name, repeated, packed)]).
_MESSAGES = [
    ("BlobShape", [("dim", 1, "int64", True, True)]),
    ("BlobProto", [
        ("shape", 7, ".caffe.BlobShape", False, False),
        ("data", 5, "float", True, True),
        ("diff", 6, "float", True, True),
        ("double_data", 8, "double", True, True),
        ("num", 1, "int64", False, False),
        ("channels", 2, "int64", False, False),
        ("height", 3, "int64", False, False),
        ("width", 4, "int64", False, False)]),
    # The same message with data unpacked (older writers; still valid).
    ("UnpackedBlobProto", [
        ("shape", 7, ".caffe.BlobShape", False, False),
        ("data", 5, "float", True, False),
        ("num", 1, "int64", False, False),
        ("channels", 2, "int64", False, False),
        ("height", 3, "int64", False, False),
        ("width", 4, "int64", False, False)]),
    ("ConvolutionParameter", [
        ("num_output", 1, "uint32", False, False),
        ("bias_term", 2, "bool", False, False),
        ("pad", 3, "uint32", True, False),
        ("kernel_size", 4, "uint32", True, False),
        ("group", 5, "uint32", False, False),
        ("stride", 6, "uint32", True, False),
        ("pad_h", 9, "uint32", False, False),
        ("pad_w", 10, "uint32", False, False),
        ("kernel_h", 11, "uint32", False, False),
        ("kernel_w", 12, "uint32", False, False),
        ("stride_h", 13, "uint32", False, False),
        ("stride_w", 14, "uint32", False, False),
        ("axis", 16, "int32", False, False),
        ("dilation", 18, "uint32", True, False)]),
    ("LRNParameter", [
        ("local_size", 1, "uint32", False, False),
        ("alpha", 2, "float", False, False),
        ("beta", 3, "float", False, False),
        ("norm_region", 4, "int32", False, False),  # enum on the wire.
        ("k", 5, "float", False, False)]),
    ("PoolingParameter", [
        ("pool", 1, "int32", False, False),  # enum: MAX 0, AVE 1.
        ("kernel_size", 2, "uint32", False, False),
        ("stride", 3, "uint32", False, False),
        ("pad", 4, "uint32", False, False),
        ("global_pooling", 12, "bool", False, False)]),
    ("InnerProductParameter", [
        ("num_output", 1, "uint32", False, False),
        ("bias_term", 2, "bool", False, False),
        ("axis", 5, "int32", False, False),
        ("transpose", 6, "bool", False, False)]),
    ("ReLUParameter", [("negative_slope", 1, "float", False, False)]),
    ("DropoutParameter", [("dropout_ratio", 1, "float", False, False)]),
    ("ConcatParameter", [("concat_dim", 1, "uint32", False, False),
                         ("axis", 2, "int32", False, False)]),
    ("EltwiseParameter", [("operation", 1, "int32", False, False),  # enum
                          ("coeff", 2, "float", True, False)]),
    ("BatchNormParameter", [
        ("use_global_stats", 1, "bool", False, False),
        ("moving_average_fraction", 2, "float", False, False),
        ("eps", 3, "float", False, False)]),
    ("ScaleParameter", [("axis", 1, "int32", False, False),
                        ("num_axes", 2, "int32", False, False),
                        ("bias_term", 4, "bool", False, False)]),
    ("LayerParameter", [
        ("name", 1, "string", False, False),
        ("type", 2, "string", False, False),
        ("bottom", 3, "string", True, False),
        ("top", 4, "string", True, False),
        ("blobs", 7, ".caffe.BlobProto", True, False),
        ("concat_param", 104, ".caffe.ConcatParameter", False, False),
        ("convolution_param", 106, ".caffe.ConvolutionParameter", False, False),
        ("dropout_param", 108, ".caffe.DropoutParameter", False, False),
        ("eltwise_param", 110, ".caffe.EltwiseParameter", False, False),
        ("inner_product_param", 117, ".caffe.InnerProductParameter", False,
         False),
        ("lrn_param", 118, ".caffe.LRNParameter", False, False),
        ("pooling_param", 121, ".caffe.PoolingParameter", False, False),
        ("relu_param", 123, ".caffe.ReLUParameter", False, False),
        ("batch_norm_param", 139, ".caffe.BatchNormParameter", False, False),
        ("scale_param", 142, ".caffe.ScaleParameter", False, False)]),
    ("V1LayerParameter", [
        ("bottom", 2, "string", True, False),
        ("top", 3, "string", True, False),
        ("name", 4, "string", False, False),
        ("type", 5, "int32", False, False),  # LayerType enum on the wire.
        ("blobs", 6, ".caffe.BlobProto", True, False),
        ("concat_param", 9, ".caffe.ConcatParameter", False, False),
        ("convolution_param", 10, ".caffe.ConvolutionParameter", False, False),
        ("dropout_param", 12, ".caffe.DropoutParameter", False, False),
        ("inner_product_param", 17, ".caffe.InnerProductParameter", False,
         False),
        ("lrn_param", 18, ".caffe.LRNParameter", False, False),
        ("pooling_param", 19, ".caffe.PoolingParameter", False, False),
        ("eltwise_param", 24, ".caffe.EltwiseParameter", False, False),
        ("relu_param", 30, ".caffe.ReLUParameter", False, False)]),
    ("NetParameter", [
        ("name", 1, "string", False, False),
        ("layers", 2, ".caffe.V1LayerParameter", True, False),
        ("layer", 100, ".caffe.LayerParameter", True, False)]),
    # A net whose layers carry unpacked blob data.
    ("UnpackedLayerParameter", [
        ("name", 1, "string", False, False),
        ("type", 2, "string", False, False),
        ("blobs", 7, ".caffe.UnpackedBlobProto", True, False)]),
    ("UnpackedNetParameter", [
        ("layer", 100, ".caffe.UnpackedLayerParameter", True, False)]),
]


def _classes() -> dict[str, Any]:
  fdp = descriptor_pb2.FileDescriptorProto(
      name="caffe_test_writer.proto", package="caffe", syntax="proto2")
  for name, fields in _MESSAGES:
    msg = fdp.message_type.add(name=name)
    for fname, number, ftype, repeated, packed in fields:
      field = msg.field.add(name=fname, number=number,
                            label=_REPEATED if repeated else _OPTIONAL)
      if ftype.startswith("."):
        field.type = _F.TYPE_MESSAGE
        field.type_name = ftype
      else:
        field.type = _TYPES[ftype]
      if packed:
        field.options.packed = True
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fdp)
  return {name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"caffe.{name}")) for name, _ in _MESSAGES}


CLASSES = _classes()


def fill_blob(blob, array: np.ndarray, legacy_dims: bool) -> None:
  """Sets a BlobProto from `array`: legacy num/channels/height/width (shape
  padded with leading ones to 4-D, as Caffe's old files store it) or a
  BlobShape."""
  array = np.asarray(array, np.float32)
  if legacy_dims:
    dims = (1,) * (4 - array.ndim) + array.shape
    blob.num, blob.channels, blob.height, blob.width = dims
  else:
    blob.shape.dim.extend(array.shape)
  flat = array.reshape(-1)
  for start in range(0, flat.size, 1 << 20):  # Chunks: fast, little memory.
    blob.data.extend(flat[start:start + (1 << 20)].tolist())


_PARAM_FIELDS = {"conv": "convolution_param", "lrn": "lrn_param",
                 "pool": "pooling_param", "ip": "inner_product_param",
                 "relu": "relu_param", "dropout": "dropout_param",
                 "concat": "concat_param", "eltwise": "eltwise_param",
                 "batch_norm": "batch_norm_param", "scale": "scale_param"}


def net_bytes(layers: Sequence[dict[str, Any]], *, legacy: bool,
              legacy_dims: bool, name: str = "test_net") -> bytes:
  """Serialises a NetParameter.

  layers: dicts with name, type (LayerParameter's type string), optional
    bottom/top lists, blobs (arrays) and parameter dicts under the keys conv,
    lrn, pool, ip, relu, dropout, concat, eltwise, batch_norm, scale (field
    names as in caffe.proto).
  legacy: write V1 `layers` (type as enum) instead of `layer`.
  """
  net = CLASSES["NetParameter"](name=name)
  for spec in layers:
    layer = net.layers.add() if legacy else net.layer.add()
    layer.name = spec["name"]
    layer.type = V1_TYPES[spec["type"]] if legacy else spec["type"]
    layer.bottom.extend(spec.get("bottom", []))
    layer.top.extend(spec.get("top", []))
    for key, field in _PARAM_FIELDS.items():
      for attr, value in spec.get(key, {}).items():
        target = getattr(layer, field)
        if isinstance(value, (list, tuple)):
          getattr(target, attr).extend(value)
        else:
          setattr(target, attr, value)
    for array in spec.get("blobs", []):
      fill_blob(layer.blobs.add(), array, legacy_dims)
  return net.SerializeToString()


def unpacked_net_bytes(layers: Sequence[dict[str, Any]]) -> bytes:
  """Like `net_bytes` (new format, BlobShape) but with unpacked float data
  and no layer parameters: only for testing the blob reader."""
  net = CLASSES["UnpackedNetParameter"]()
  for spec in layers:
    layer = net.layer.add(name=spec["name"], type=spec["type"])
    for array in spec.get("blobs", []):
      blob = layer.blobs.add()
      blob.shape.dim.extend(np.shape(array))
      blob.data.extend(np.asarray(array, np.float32).reshape(-1))
  return net.SerializeToString()


def blob_bytes(array: np.ndarray, legacy_dims: bool = True) -> bytes:
  """A serialised BlobProto (a .binaryproto file, e.g. a mean image)."""
  blob = CLASSES["BlobProto"]()
  fill_blob(blob, array, legacy_dims)
  return blob.SerializeToString()


def alexnet_layers(weights: dict[str, tuple[np.ndarray, np.ndarray]], *,
                   arch: str, conv1: tuple[int, int, int], groups: int,
                   lrn: tuple[int, float, float, float],
                   with_training_layers: bool = True,
                   fc_transpose: bool = False) -> list[dict[str, Any]]:
  """The layer list of a Caffe CaffeNet/AlexNet holding `weights` (Caffe
  layout: conv OIHW, fc [out, in]), as Caffe saves a trained train_val net:
  data layer first, dropout, accuracy and loss at the end.
  fc_transpose: store fc weights [in, out] with InnerProduct's transpose
  flag set (the same network)."""
  size, alpha, beta, k = lrn
  layers: list[dict[str, Any]] = []
  if with_training_layers:
    layers.append(dict(name="data", type="Data", top=["data", "label"]))
  geometry = {1: conv1, 2: (5, 1, 2), 3: (3, 1, 1), 4: (3, 1, 1),
              5: (3, 1, 1)}
  bottom = "data"
  for i in range(1, 6):
    w, b = weights[f"conv{i}"]
    kernel, stride, pad = geometry[i]
    conv = dict(num_output=w.shape[0], kernel_size=[kernel])
    if stride != 1:
      conv["stride"] = [stride]
    if pad:
      conv["pad"] = [pad]
    if i in (2, 4, 5) and groups != 1:
      conv["group"] = groups
    layers.append(dict(name=f"conv{i}", type="Convolution", bottom=[bottom],
                       top=[f"conv{i}"], blobs=[w, b], conv=conv))
    layers.append(dict(name=f"relu{i}", type="ReLU", bottom=[f"conv{i}"],
                       top=[f"conv{i}"]))
    bottom = f"conv{i}"
    pool = dict(name=f"pool{i}", type="Pooling",
                pool=dict(pool=0, kernel_size=3, stride=2))
    norm = dict(name=f"norm{i}", type="LRN",
                lrn=dict(local_size=size, alpha=alpha, beta=beta, k=k))
    if i in (1, 2):
      first, second = (pool, norm) if arch == "caffenet" else (norm, pool)
      for layer in (first, second):
        layer.update(bottom=[bottom], top=[layer["name"]])
        layers.append(layer)
        bottom = layer["name"]
    elif i == 5:
      pool.update(bottom=[bottom], top=["pool5"])
      layers.append(pool)
      bottom = "pool5"
  for j in (6, 7, 8):
    w, b = weights[f"fc{j}"]
    ip = dict(num_output=w.shape[0])
    if fc_transpose:
      w, ip["transpose"] = w.T, True
    layers.append(dict(name=f"fc{j}", type="InnerProduct", bottom=[bottom],
                       top=[f"fc{j}"], blobs=[w, b], ip=ip))
    bottom = f"fc{j}"
    if j < 8:
      layers.append(dict(name=f"relu{j}", type="ReLU", bottom=[bottom],
                         top=[bottom]))
      if with_training_layers:
        layers.append(dict(name=f"drop{j}", type="Dropout", bottom=[bottom],
                           top=[bottom], dropout=dict(dropout_ratio=0.5)))
  if with_training_layers:
    layers.append(dict(name="accuracy", type="Accuracy",
                       bottom=["fc8", "label"], top=["accuracy"]))
    layers.append(dict(name="loss", type="SoftmaxWithLoss",
                       bottom=["fc8", "label"], top=["loss"]))
  else:
    layers.append(dict(name="prob", type="Softmax", bottom=["fc8"],
                       top=["prob"]))
  return layers


def resnet_layers(sd: dict[str, np.ndarray], blocks: Sequence[int],
                  pool5_size: int, *, bn_factor: float = 999.982
                  ) -> list[dict[str, Any]]:
  """The layer list of the authors' Caffe ResNet deploy net holding `sd`
  (Caffe's layer names, reference_resnet_torch's layout: conv OIHW,
  BatchNorm mean/var, Scale weight/bias, fc [out, in]). BatchNorm blobs are
  stored as Caffe keeps them: the statistics times a moving-average factor,
  and the factor."""
  layers: list[dict[str, Any]] = [dict(name="data", type="Input",
                                       top=["data"])]

  def conv(name, bottom, stride, pad, bias=False):
    w = sd[f"{name}.weight"]
    spec = dict(num_output=w.shape[0], kernel_size=[w.shape[2]],
                bias_term=bias)
    if stride != 1:
      spec["stride"] = [stride]
    if pad:
      spec["pad"] = [pad]
    blobs = [w] + ([sd[f"{name}.bias"]] if bias else [])
    layers.append(dict(name=name, type="Convolution", bottom=[bottom],
                       top=[name], blobs=blobs, conv=spec))

  def bn_scale(bn, scale, top):
    layers.append(dict(
        name=bn, type="BatchNorm", bottom=[top], top=[top],
        batch_norm=dict(use_global_stats=True),
        blobs=[sd[f"{bn}.mean"] * bn_factor, sd[f"{bn}.var"] * bn_factor,
               np.array([bn_factor], np.float32)]))
    layers.append(dict(name=scale, type="Scale", bottom=[top], top=[top],
                       scale=dict(bias_term=True),
                       blobs=[sd[f"{scale}.weight"], sd[f"{scale}.bias"]]))

  def relu(name, top):
    layers.append(dict(name=name, type="ReLU", bottom=[top], top=[top]))

  conv("conv1", "data", 2, 3, bias=True)
  bn_scale("bn_conv1", "scale_conv1", "conv1")
  relu("conv1_relu", "conv1")
  layers.append(dict(name="pool1", type="Pooling", bottom=["conv1"],
                     top=["pool1"], pool=dict(pool=0, kernel_size=3,
                                              stride=2)))
  bottom = "pool1"
  units = ("2a", "2b", "2c")
  for s, count in enumerate(blocks):
    for b in range(count):
      name = f"{s + 2}{'abcdefghijklmnopqrstuvwxyz'[b]}"
      stride = 2 if s > 0 and b == 0 else 1
      shortcut = bottom
      if f"res{name}_branch1.weight" in sd:
        conv(f"res{name}_branch1", bottom, stride, 0)
        bn_scale(f"bn{name}_branch1", f"scale{name}_branch1",
                 f"res{name}_branch1")
        shortcut = f"res{name}_branch1"
      top = bottom
      for i, unit in enumerate(units):
        kernel = sd[f"res{name}_branch{unit}.weight"].shape[2]
        conv(f"res{name}_branch{unit}", top,
             stride if i == 0 else 1, (kernel - 1) // 2)
        top = f"res{name}_branch{unit}"
        bn_scale(f"bn{name}_branch{unit}", f"scale{name}_branch{unit}", top)
        if i < len(units) - 1:
          relu(f"res{name}_branch{unit}_relu", top)
      layers.append(dict(name=f"res{name}", type="Eltwise",
                         bottom=[shortcut, top], top=[f"res{name}"]))
      relu(f"res{name}_relu", f"res{name}")
      bottom = f"res{name}"
  layers.append(dict(name="pool5", type="Pooling", bottom=[bottom],
                     top=["pool5"], pool=dict(pool=1, kernel_size=pool5_size,
                                              stride=1)))
  layers.append(dict(name="fc1000", type="InnerProduct", bottom=["pool5"],
                     top=["fc1000"], blobs=[sd["fc1000.weight"],
                                            sd["fc1000.bias"]],
                     ip=dict(num_output=sd["fc1000.weight"].shape[0])))
  layers.append(dict(name="prob", type="Softmax", bottom=["fc1000"],
                     top=["prob"]))
  return layers


def googlenet_layers(sd: dict[str, np.ndarray], pool5_size: int, *,
                     with_aux: bool = True) -> list[dict[str, Any]]:
  """The layer list of bvlc_googlenet holding `sd` (Caffe's layer names,
  reference_googlenet_torch's layout: conv OIHW with biases, classifier
  [out, in]), as Caffe saves the trained train_val net: with the auxiliary
  classifiers (loss1/*, loss2/*) unless `with_aux` is False."""
  layers: list[dict[str, Any]] = [dict(name="data", type="Data",
                                       top=["data", "label"])]

  def conv(name, bottom, stride=1):
    w = sd[f"{name}.weight"]
    pad = (w.shape[2] - 1) // 2
    spec = dict(num_output=w.shape[0], kernel_size=[w.shape[2]])
    if stride != 1:
      spec["stride"] = [stride]
    if pad:
      spec["pad"] = [pad]
    layers.append(dict(name=name, type="Convolution", bottom=[bottom],
                       top=[name], blobs=[w, sd[f"{name}.bias"]], conv=spec))
    layers.append(dict(name=name.replace("/", "/relu_", 1), type="ReLU",
                       bottom=[name], top=[name]))

  def pool(name, bottom, kernel, stride, pad=0, method=0):
    spec = dict(pool=method, kernel_size=kernel, stride=stride)
    if pad:
      spec["pad"] = pad
    layers.append(dict(name=name, type="Pooling", bottom=[bottom],
                       top=[name], pool=spec))

  def lrn(name, bottom):
    layers.append(dict(name=name, type="LRN", bottom=[bottom], top=[name],
                       lrn=dict(local_size=5, alpha=1e-4, beta=0.75)))

  conv("conv1/7x7_s2", "data", stride=2)
  pool("pool1/3x3_s2", "conv1/7x7_s2", 3, 2)
  lrn("pool1/norm1", "pool1/3x3_s2")
  conv("conv2/3x3_reduce", "pool1/norm1")
  conv("conv2/3x3", "conv2/3x3_reduce")
  lrn("conv2/norm2", "conv2/3x3")
  pool("pool2/3x3_s2", "conv2/norm2", 3, 2)
  bottom = "pool2/3x3_s2"
  for module in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
    name = f"inception_{module}"
    conv(f"{name}/1x1", bottom)
    conv(f"{name}/3x3_reduce", bottom)
    conv(f"{name}/3x3", f"{name}/3x3_reduce")
    conv(f"{name}/5x5_reduce", bottom)
    conv(f"{name}/5x5", f"{name}/5x5_reduce")
    pool(f"{name}/pool", bottom, 3, 1, pad=1)
    conv(f"{name}/pool_proj", f"{name}/pool")
    layers.append(dict(name=f"{name}/output", type="Concat",
                       bottom=[f"{name}/{b}" for b in
                               ("1x1", "3x3", "5x5", "pool_proj")],
                       top=[f"{name}/output"]))
    bottom = f"{name}/output"
    if module in ("3b", "4e"):
      pool(f"pool{module[0]}/3x3_s2", bottom, 3, 2)
      bottom = f"pool{module[0]}/3x3_s2"
    if with_aux and module in ("4a", "4d"):
      aux = f"loss{1 if module == '4a' else 2}"
      pool(f"{aux}/ave_pool", bottom, 5, 3, method=1)
      layers.append(dict(
          name=f"{aux}/conv", type="Convolution", bottom=[f"{aux}/ave_pool"],
          top=[f"{aux}/conv"], conv=dict(num_output=4, kernel_size=[1]),
          blobs=[np.ones((4, 1, 1, 1), np.float32),
                 np.zeros(4, np.float32)]))
      layers.append(dict(name=f"{aux}/loss", type="SoftmaxWithLoss",
                         bottom=[f"{aux}/conv", "label"],
                         top=[f"{aux}/loss"]))
  pool("pool5/7x7_s1", bottom, pool5_size, 1, method=1)
  layers.append(dict(name="pool5/drop_7x7_s1", type="Dropout",
                     bottom=["pool5/7x7_s1"], top=["pool5/7x7_s1"],
                     dropout=dict(dropout_ratio=0.4)))
  layers.append(dict(name="loss3/classifier", type="InnerProduct",
                     bottom=["pool5/7x7_s1"], top=["loss3/classifier"],
                     blobs=[sd["loss3/classifier.weight"],
                            sd["loss3/classifier.bias"]],
                     ip=dict(num_output=sd["loss3/classifier.weight"].shape[0])))
  layers.append(dict(name="loss3/loss3", type="SoftmaxWithLoss",
                     bottom=["loss3/classifier", "label"],
                     top=["loss3/loss3"]))
  return layers
