"""Reads Caffe .caffemodel (and .binaryproto) files without Caffe or caffe_pb2.

A .caffemodel is one serialised `caffe.NetParameter` protobuf message. This
module decodes the protobuf wire format directly (varints, length-delimited
fields, 32/64-bit fixed fields) for the few messages a weight converter needs,
using the field numbers of Caffe's `src/caffe/proto/caffe.proto`:

  NetParameter      name 1, layers 2 (V1LayerParameter, legacy, the 2014 BVLC
                    files), layer 100 (LayerParameter, current)
  LayerParameter    name 1, type 2 (string), bottom 3, top 4, blobs 7,
                    concat_param 104, convolution_param 106,
                    dropout_param 108, eltwise_param 110,
                    inner_product_param 117, lrn_param 118, pooling_param 121,
                    relu_param 123, batch_norm_param 139, scale_param 142
  V1LayerParameter  layer 1 (V0, unsupported), bottom 2, top 3, name 4,
                    type 5 (LayerType enum), blobs 6, concat_param 9,
                    convolution_param 10, dropout_param 12,
                    inner_product_param 17, lrn_param 18, pooling_param 19,
                    eltwise_param 24, relu_param 30
  ConcatParameter   concat_dim 1, axis 2; EltwiseParameter operation 1,
                    coeff 2; BatchNormParameter use_global_stats 1,
                    moving_average_fraction 2, eps 3; ScaleParameter axis 1,
                    num_axes 2, bias_term 4
  BlobProto         num/channels/height/width 1-4 (legacy 4-D shape),
                    data 5 (packed float; unpacked also read), shape 7
                    (BlobShape: dim 1, packed int64), double_data 8

Large float arrays are decoded with `np.frombuffer` straight from the file's
bytes, so a 240 MB AlexNet reads in well under a second. Anything that does not
decode cleanly (truncated varint, a length running past the end, an invalid
wire type, a blob whose data size differs from its shape) raises `PortError`
naming the place, so a damaged file is never turned into wrong weights.

The result is plain data (`Net`, `Layer`): layer types are Caffe's type
strings ("Convolution", "LRN", ...), legacy enum types are mapped to them, and
layer parameters are dicts with Caffe's defaults filled in by `Layer.param`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from inverter.port.common import PortError

# Wire types.
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5

# V1LayerParameter.LayerType values -> the LayerParameter type strings.
V1_LAYER_TYPES = {
    0: "None", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution",
    5: "Data", 6: "Dropout", 7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data",
    10: "HDF5Output", 11: "Im2col", 12: "ImageData", 13: "InfogainLoss",
    14: "InnerProduct", 15: "LRN", 16: "MultinomialLogisticLoss",
    17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData",
    25: "Eltwise", 26: "Power", 27: "SigmoidCrossEntropyLoss",
    28: "HingeLoss", 29: "MemoryData", 30: "ArgMax", 31: "Threshold",
    32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal", 36: "Silence",
    37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}


# Message schemas: field number -> (name, kind, repeated, default).
# kind: 'uint', 'int' (signed 64-bit varint), 'bool', 'enum', 'float',
# 'string', 'floats'/'doubles' (repeated numeric arrays -> numpy), or a
# nested schema dict (a message).
def _f(name, kind, repeated=False, default=None):
  return (name, kind, repeated, default)


BLOB_SHAPE = {1: _f("dim", "int", True)}
BLOB = {
    1: _f("num", "int"), 2: _f("channels", "int"), 3: _f("height", "int"),
    4: _f("width", "int"), 5: _f("data", "floats"), 7: _f("shape", BLOB_SHAPE),
    8: _f("double_data", "doubles"),
}
CONVOLUTION = {
    1: _f("num_output", "uint"), 2: _f("bias_term", "bool", default=True),
    3: _f("pad", "uint", True), 4: _f("kernel_size", "uint", True),
    5: _f("group", "uint", default=1), 6: _f("stride", "uint", True),
    9: _f("pad_h", "uint"), 10: _f("pad_w", "uint"),
    11: _f("kernel_h", "uint"), 12: _f("kernel_w", "uint"),
    13: _f("stride_h", "uint"), 14: _f("stride_w", "uint"),
    16: _f("axis", "int", default=1), 18: _f("dilation", "uint", True),
}
LRN = {
    1: _f("local_size", "uint", default=5),
    2: _f("alpha", "float", default=1.0),
    3: _f("beta", "float", default=0.75),
    4: _f("norm_region", "enum", default=0),  # 0 ACROSS_CHANNELS
    5: _f("k", "float", default=1.0),
}
POOLING = {
    1: _f("pool", "enum", default=0),  # 0 MAX, 1 AVE, 2 STOCHASTIC
    2: _f("kernel_size", "uint", True), 3: _f("stride", "uint", True),
    4: _f("pad", "uint", True), 5: _f("kernel_h", "uint"),
    6: _f("kernel_w", "uint"), 7: _f("stride_h", "uint"),
    8: _f("stride_w", "uint"), 9: _f("pad_h", "uint"), 10: _f("pad_w", "uint"),
    12: _f("global_pooling", "bool", default=False),
}
INNER_PRODUCT = {
    1: _f("num_output", "uint"), 2: _f("bias_term", "bool", default=True),
    5: _f("axis", "int", default=1), 6: _f("transpose", "bool", default=False),
}
RELU = {1: _f("negative_slope", "float", default=0.0)}
DROPOUT = {1: _f("dropout_ratio", "float", default=0.5)}
CONCAT = {1: _f("concat_dim", "uint", default=1),
          2: _f("axis", "int", default=1)}
ELTWISE = {1: _f("operation", "enum", default=1),  # 0 PROD, 1 SUM, 2 MAX
           2: _f("coeff", "float", True)}
BATCH_NORM = {1: _f("use_global_stats", "bool"),
              2: _f("moving_average_fraction", "float", default=0.999),
              3: _f("eps", "float", default=1e-5)}
SCALE = {1: _f("axis", "int", default=1), 2: _f("num_axes", "int", default=1),
         4: _f("bias_term", "bool", default=False)}

PARAM_SCHEMAS = {
    "convolution_param": CONVOLUTION, "lrn_param": LRN,
    "pooling_param": POOLING, "inner_product_param": INNER_PRODUCT,
    "relu_param": RELU, "dropout_param": DROPOUT, "concat_param": CONCAT,
    "eltwise_param": ELTWISE, "batch_norm_param": BATCH_NORM,
    "scale_param": SCALE,
}

LAYER = {
    1: _f("name", "string"), 2: _f("type", "string"),
    3: _f("bottom", "string", True), 4: _f("top", "string", True),
    7: _f("blobs", BLOB, True),
    104: _f("concat_param", CONCAT),
    106: _f("convolution_param", CONVOLUTION),
    108: _f("dropout_param", DROPOUT),
    110: _f("eltwise_param", ELTWISE),
    117: _f("inner_product_param", INNER_PRODUCT),
    118: _f("lrn_param", LRN), 121: _f("pooling_param", POOLING),
    123: _f("relu_param", RELU),
    139: _f("batch_norm_param", BATCH_NORM),
    142: _f("scale_param", SCALE),
}
V1_LAYER = {
    1: _f("v0_layer", "bytes"),
    2: _f("bottom", "string", True), 3: _f("top", "string", True),
    4: _f("name", "string"), 5: _f("type", "enum"),
    6: _f("blobs", BLOB, True),
    9: _f("concat_param", CONCAT),
    10: _f("convolution_param", CONVOLUTION),
    12: _f("dropout_param", DROPOUT),
    17: _f("inner_product_param", INNER_PRODUCT),
    18: _f("lrn_param", LRN), 19: _f("pooling_param", POOLING),
    24: _f("eltwise_param", ELTWISE),
    30: _f("relu_param", RELU),
}
NET = {
    1: _f("name", "string"),
    2: _f("layers", V1_LAYER, True),
    100: _f("layer", LAYER, True),
}

_SCALAR_WIRE = {"uint": _VARINT, "int": _VARINT, "bool": _VARINT,
                "enum": _VARINT, "float": _I32}


@dataclasses.dataclass
class Layer:
  """One layer of a Caffe net.

  type: Caffe's type string ("Convolution", "InnerProduct", "LRN", ...).
  blobs: the learned parameters as numpy arrays of the stored shape (legacy
    files store 4-D shapes, e.g. (1, 1, 4096, 9216) for an fc weight).
  params: the layer-specific parameter messages the file contains, e.g.
    {'convolution_param': {...}}; use `param` to get them with defaults.
  """

  name: str
  type: str
  bottom: list[str]
  top: list[str]
  blobs: list[np.ndarray]
  params: dict[str, dict[str, Any]]

  def param(self, kind: str) -> dict[str, Any]:
    """The `kind` parameters ('lrn_param', ...) with Caffe's defaults."""
    return with_defaults(PARAM_SCHEMAS[kind], self.params.get(kind, {}))


@dataclasses.dataclass
class Net:
  """A decoded NetParameter. legacy: True if read from V1 `layers`."""

  name: str
  layers: list[Layer]
  legacy: bool

  def by_type(self, *types: str) -> list[Layer]:
    return [layer for layer in self.layers if layer.type in types]

  def summary(self) -> str:
    """'conv1:Convolution, relu1:ReLU, ...' for error messages."""
    return ", ".join(f"{l.name}:{l.type}" for l in self.layers)


def with_defaults(schema: dict, values: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for name, _, repeated, default in schema.values():
    out[name] = values.get(name, [] if repeated else default)
  return out


class _Decoder:
  """Protobuf wire-format decoding over one bytes buffer."""

  def __init__(self, buf: bytes, source: str):
    self.buf = buf
    self.source = source

  def fail(self, where: str, pos: int, what: str) -> PortError:
    return PortError(
        f"{self.source}: cannot decode {where} at byte {pos}: {what}. The file"
        " is damaged, truncated or not a Caffe model; download it again and"
        " check its SHA-1.")

  def varint(self, pos: int, end: int, where: str) -> tuple[int, int]:
    buf = self.buf
    result = shift = 0
    start = pos
    while True:
      if pos >= end:
        raise self.fail(where, start, "varint runs past the end of its data")
      b = buf[pos]
      pos += 1
      result |= (b & 0x7F) << shift
      if b < 0x80:
        return result, pos
      shift += 7
      if shift >= 70:
        raise self.fail(where, start, "varint longer than 10 bytes")

  def length(self, pos: int, end: int, where: str) -> tuple[int, int]:
    n, pos = self.varint(pos, end, where)
    if n > end - pos:
      raise self.fail(where, pos, f"a field of {n} bytes runs past the end of"
                      f" its message ({end - pos} bytes left)")
    return n, pos

  def skip(self, wire: int, pos: int, end: int, where: str) -> int:
    if wire == _VARINT:
      return self.varint(pos, end, where)[1]
    if wire in (_I64, _I32):
      size = 8 if wire == _I64 else 4
      if pos + size > end:
        raise self.fail(where, pos, "fixed-size field runs past the end")
      return pos + size
    if wire == _LEN:
      n, pos = self.length(pos, end, where)
      return pos + n
    raise self.fail(where, pos, f"invalid or unsupported wire type {wire}")

  def message(self, schema: dict, start: int, end: int,
              where: str) -> dict[str, Any]:
    """Decodes the fields of `schema` in buf[start:end]; others are skipped."""
    out: dict[str, Any] = {}
    arrays: dict[str, list[np.ndarray]] = {}
    pos = start
    while pos < end:
      tag_pos = pos
      tag, pos = self.varint(pos, end, where)
      number, wire = tag >> 3, tag & 7
      if number == 0:
        raise self.fail(where, tag_pos, "field number 0")
      field = schema.get(number)
      if field is None:
        pos = self.skip(wire, pos, end, where)
        continue
      name, kind, repeated, _ = field
      here = f"{where}.{name}"
      if kind in ("floats", "doubles"):
        chunk, pos = self.numbers(kind, number, wire, pos, end, here)
        arrays.setdefault(name, []).append(chunk)
        continue
      if isinstance(kind, dict) or kind in ("string", "bytes"):
        if wire != _LEN:
          raise self.fail(here, tag_pos, f"wire type {wire}, expected 2")
        n, pos = self.length(pos, end, here)
        if isinstance(kind, dict):
          value = self.message(kind, pos, pos + n, here)
        elif kind == "string":
          try:
            value = self.buf[pos:pos + n].decode("utf-8")
          except UnicodeDecodeError:
            raise self.fail(here, pos, "string is not UTF-8") from None
        else:
          value = self.buf[pos:pos + n]
        pos += n
        values = [value]
      elif wire == _LEN and repeated:  # A packed run of scalars.
        n, pos = self.length(pos, end, here)
        values, pos = self.packed(kind, pos, pos + n, here)
      else:
        if wire != _SCALAR_WIRE[kind]:
          raise self.fail(here, tag_pos, f"wire type {wire}, expected"
                          f" {_SCALAR_WIRE[kind]}")
        value, pos = self.scalar(kind, pos, end, here)
        values = [value]
      if repeated:
        out.setdefault(name, []).extend(values)
      else:
        out[name] = values[-1]  # proto2: the last occurrence wins.
    for name, chunks in arrays.items():
      out[name] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return out

  def scalar(self, kind: str, pos: int, end: int, where: str):
    if kind == "float":
      if pos + 4 > end:
        raise self.fail(where, pos, "float runs past the end")
      return float(np.frombuffer(self.buf, "<f4", 1, pos)[0]), pos + 4
    value, pos = self.varint(pos, end, where)
    if kind == "int" and value >= 1 << 63:
      value -= 1 << 64
    elif kind == "bool":
      value = bool(value)
    return value, pos

  def packed(self, kind: str, pos: int, end: int, where: str):
    values = []
    if kind == "float":
      if (end - pos) % 4:
        raise self.fail(where, pos, "packed floats not a multiple of 4 bytes")
      return [float(v) for v in np.frombuffer(
          self.buf, "<f4", (end - pos) // 4, pos)], end
    while pos < end:
      value, pos = self.scalar(kind, pos, end, where)
      values.append(value)
    return values, pos

  def numbers(self, kind: str, number: int, wire: int, pos: int, end: int,
              where: str) -> tuple[np.ndarray, int]:
    """A repeated float/double field: one packed chunk, or a run of unpacked
    elements (each with its own tag), read without a per-element loop."""
    dtype, size, elem_wire = (("<f4", 4, _I32) if kind == "floats"
                              else ("<f8", 8, _I64))
    if wire == _LEN:
      n, pos = self.length(pos, end, where)
      if n % size:
        raise self.fail(where, pos, f"packed data of {n} bytes is not a"
                        f" multiple of {size}")
      return np.frombuffer(self.buf, dtype, n // size, pos), pos + n
    if wire != elem_wire:
      raise self.fail(where, pos, f"wire type {wire}, expected 2 or"
                      f" {elem_wire}")
    # Unpacked: records of [tag byte, value] (these field numbers have
    # one-byte tags). `pos` is just after the first tag.
    tag = (number << 3) | elem_wire
    record = 1 + size
    first = pos - 1
    rows = (end - first) // record
    if rows == 0:
      raise self.fail(where, pos, "value runs past the end")
    table = np.frombuffer(self.buf, np.uint8, rows * record, first)
    table = table.reshape(rows, record)
    breaks = np.flatnonzero(table[:, 0] != tag)
    count = int(breaks[0]) if breaks.size else rows
    values = np.ascontiguousarray(table[:count, 1:]).view(dtype).reshape(-1)
    return values, first + count * record


def _blob_array(blob: dict[str, Any], where: str, source: str) -> np.ndarray:
  """A decoded BlobProto as a numpy array of its declared shape."""
  if "shape" in blob:
    shape = tuple(int(d) for d in blob["shape"].get("dim", []))
  elif any(k in blob for k in ("num", "channels", "height", "width")):
    shape = tuple(int(blob.get(k, 0))
                  for k in ("num", "channels", "height", "width"))
  else:
    shape = ()
  if any(d < 0 for d in shape):
    raise PortError(f"{source}: {where} has a negative dimension {shape}.")
  data = blob.get("data")
  if data is None or (data.size == 0 and "double_data" in blob):
    data = blob.get("double_data", np.zeros(0, np.float32))
  count = math.prod(shape)
  if data.size != count:
    raise PortError(
        f"{source}: {where} has shape {shape}, i.e. {count} values, but its"
        f" data holds {data.size}. The file is damaged or truncated; download"
        " it again and check its SHA-1.")
  return data.reshape(shape)


def _layer(raw: dict[str, Any], legacy: bool, index: int,
           source: str) -> Layer:
  name = raw.get("name", f"#{index}")
  if legacy:
    if "v0_layer" in raw and "type" not in raw:
      raise PortError(
          f"{source}: layer {index} is in Caffe's oldest (V0) format, which"
          " this reader does not support. Upgrade the file with Caffe's"
          " tools/upgrade_net_proto_binary and port the result.")
    number = raw.get("type", 0)
    type_ = V1_LAYER_TYPES.get(number, f"V1LayerType{number}")
  else:
    type_ = raw.get("type", "")
  blobs = [_blob_array(b, f"layer {name!r} blob {i}", source)
           for i, b in enumerate(raw.get("blobs", []))]
  params = {k: raw[k] for k in PARAM_SCHEMAS if k in raw}
  return Layer(name=name, type=type_, bottom=list(raw.get("bottom", [])),
               top=list(raw.get("top", [])), blobs=blobs, params=params)


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise PortError(f"Cannot read {path}: {e.strerror or e}.") from None


def parse_net(buf: bytes, source: str = "<bytes>") -> Net:
  """Decodes a serialised NetParameter."""
  raw = _Decoder(buf, source).message(NET, 0, len(buf), "NetParameter")
  new, old = raw.get("layer", []), raw.get("layers", [])
  if new and old:
    raise PortError(f"{source}: the net has both `layer` and legacy `layers`"
                    " fields; Caffe refuses such files too.")
  if not new and not old:
    raise PortError(
        f"{source}: no layers found. This is not a Caffe .caffemodel (or it is"
        " empty or damaged); download it again and check its SHA-1.")
  layers = [_layer(l, bool(old), i, source) for i, l in enumerate(new or old)]
  return Net(name=raw.get("name", ""), layers=layers, legacy=bool(old))


def read_net(path: str | os.PathLike[str]) -> Net:
  """Reads a .caffemodel file."""
  return parse_net(_read_bytes(path), os.fspath(path))


def read_blob(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads a .binaryproto file (one BlobProto, e.g. imagenet_mean)."""
  buf = _read_bytes(path)
  raw = _Decoder(buf, os.fspath(path)).message(BLOB, 0, len(buf), "BlobProto")
  if not raw:
    raise PortError(f"{path}: not a BlobProto (.binaryproto) file.")
  return _blob_array(raw, "BlobProto", os.fspath(path))


def looks_like_net(path: str | os.PathLike[str]) -> bool:
  """Cheap check: does the file start like a serialised NetParameter?

  Accepts the .caffemodel extension, or a file whose first field is the net's
  printable name (1) followed by another NetParameter field, or is a layers
  (2) / layer (100) message whose length fits in the file.
  """
  if os.fspath(path).lower().endswith(".caffemodel"):
    return True
  try:
    with open(path, "rb") as f:
      head = f.read(4096)
    size = os.path.getsize(path)
  except OSError:
    return False
  decoder = _Decoder(head, os.fspath(path))
  layer_tags = ((2 << 3) | _LEN, (100 << 3) | _LEN)
  try:
    tag, pos = decoder.varint(0, len(head), "tag")
    if tag == (1 << 3) | _LEN:  # name, then more of the net.
      n, pos = decoder.length(pos, len(head), "name")
      name = head[pos:pos + n]
      if not name.isascii() or not name.decode("ascii").isprintable():
        return False
      tag, pos = decoder.varint(pos + n, len(head), "tag")
      return tag >> 3 in (2, 3, 4, 5, 6, 7, 8, 100)
    if tag not in layer_tags:
      return False
    n, pos = decoder.varint(pos, len(head), "length")
  except PortError:
    return False
  return 0 < n <= size - pos
