"""Format 'caffemodel': Caffe's pretrained AlexNets -> inverter's encoder.

Converts `bvlc_reference_caffenet.caffemodel` (caffenet: conv-relu-pool-norm)
and `bvlc_alexnet.caffemodel` (alexnet: conv-relu-norm-pool), and any network
of the same shape (e.g. reduced widths), into the params of
`inverter.models.alexnet.AlexNet`:
  * conv kernels OIHW -> HWIO; grouped layers keep Caffe's per-group input
    width (Caffe's group g maps to our split g, see `layers.CaffeConv`);
  * fc6's rows are reordered from Caffe's C, H, W flattening of pool5 to our
    H, W, C; fc kernels are transposed to [in, out];
  * conv stride/pad/kernel/group, pooling and LRN parameters are read from the
    file and checked against what the module computes; anything else is a
    `PortError`, never a silently different network.
The architecture (caffenet or alexnet) is read from the layer order; the
`arch` option must agree with it, and is only needed for files that were
stripped of their non-weight layers.

Extension point: `CAFFE_NETS` lists the networks a .caffemodel may hold, as
`CaffeNet(name, detect, convert)` entries; `convert_file` reads the file once
and calls the `convert(net, path, options) -> Ported` of the first entry whose
`detect(net) -> bool` accepts the decoded `caffemodel.Net`. Another module adds
a network (e.g. VGG-16) with `register_caffe_net(CaffeNet(...))` at import;
`caffe_preprocessing` gives it the Caffe input convention (BGR, 0-255, mean).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

from inverter import presets
from inverter.port import caffemodel, common
from inverter.port.common import PortError, Ported

DEFAULT_INPUT_SIZE = 227
MEAN_IMAGE_FILE = "mean.npy"


@dataclasses.dataclass(frozen=True)
class CaffeNet:
  """One network a .caffemodel may hold (see the module docstring)."""

  name: str
  detect: Callable[[caffemodel.Net], bool]
  convert: Callable[[caffemodel.Net, str, Mapping[str, Any]], Ported]


CAFFE_NETS: list[CaffeNet] = []


def register_caffe_net(entry: CaffeNet) -> CaffeNet:
  CAFFE_NETS.append(entry)
  return entry


def convert_file(path: str, options: Mapping[str, Any]) -> Ported:
  """Reads a .caffemodel; converts it with the first matching CAFFE_NETS."""
  net = caffemodel.read_net(path)
  for entry in CAFFE_NETS:
    if entry.detect(net):
      return entry.convert(net, path, options)
  raise PortError(
      f"{path}: not a network this tool converts (known:"
      f" {', '.join(e.name for e in CAFFE_NETS)}). Its layers:"
      f" {net.summary()}")


# --- Input convention -------------------------------------------------------

def caffe_preprocessing(options: Mapping[str, Any],
                        cfg: ml_collections.ConfigDict
                        ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Applies the --mean option to a Caffe encoder config.

  Sets `cfg.preprocessing.mean` (BGR, on the 0-255 scale; the rest of
  `cfg.preprocessing` is the preset's Caffe convention: BGR, scale 1, std 1)
  and returns the metadata `preprocessing` block and extra files to write.
  options['mean'] is None (the preset's mean, 104, 117, 123 for the
  AlexNets), 'B,G,R' values, or a BGR mean image file: a .npy of shape
  [3, H, W] (like ilsvrc_2012_mean.npy) or a .binaryproto BlobProto (like
  imagenet_mean.binaryproto). A mean image gives its per-channel average
  (rounded to 0.001) as the mean and is also written, [3, H, W] BGR float32
  (usable as data.mean_file), as `mean.npy` in the encoder directory.
  """
  spec = options.get("mean")
  extra: dict[str, np.ndarray] = {}
  image_info: dict[str, Any] = {}
  if spec is None or spec == "":
    mean = tuple(float(v) for v in cfg.preprocessing.mean)
  elif str(spec).lower().endswith((".npy", ".binaryproto")):
    image = _read_mean_image(str(spec))
    mean = tuple(round(float(v), 3) for v in image.reshape(-1, 3).mean(0))
    # Saved in Caffe's [3, H, W] BGR layout so it can be given as
    # data.mean_file as it is.
    chw = np.ascontiguousarray(np.transpose(image, (2, 0, 1)))
    image_info = dict(mean_image=MEAN_IMAGE_FILE, mean_image_layout="CHW",
                      mean_image_shape=list(chw.shape),
                      mean_image_source=os.path.basename(str(spec)))
    extra[MEAN_IMAGE_FILE] = chw
  else:
    try:
      values = [float(v) for v in str(spec).split(",")]
    except ValueError:
      values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
      raise PortError(
          f"--mean {spec!r}: give three per-channel values in B,G,R order"
          " (e.g. 104,117,123) or a mean image file (.npy [3, H, W] or"
          " .binaryproto).")
    mean = tuple(values)
  cfg.preprocessing.mean = mean
  prep = dict(cfg.preprocessing.to_dict(), input_size=int(cfg.input_size))
  prep = {k: list(v) if isinstance(v, tuple) else v for k, v in prep.items()}
  prep.update(image_info)
  return prep, extra


def _read_mean_image(path: str) -> np.ndarray:
  """A BGR mean image file as [H, W, 3] float32."""
  if not os.path.isfile(path):
    raise PortError(f"--mean {path}: no such file.")
  if path.lower().endswith(".npy"):
    try:
      array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise PortError(f"--mean {path}: not a readable .npy array ({e}).") \
          from None
  else:
    array = caffemodel.read_blob(path)
    if array.ndim == 4 and array.shape[0] == 1:
      array = array[0]
  if array.ndim != 3 or array.shape[0] != 3:
    raise PortError(
        f"--mean {path}: shape {array.shape}; expected a BGR mean image in"
        " Caffe's [3, H, W] layout.")
  image = np.transpose(np.asarray(array, np.float32), (1, 2, 0))
  if not np.all(np.isfinite(image)):
    raise PortError(f"--mean {path}: contains NaN or infinite values.")
  return np.ascontiguousarray(image)


def float32_value(x: float) -> float:
  """A float32 file value as the shortest decimal that reads back the same
  (0.0001, not 9.99999974738e-05), so configs compare equal to it."""
  return float(str(np.float32(x)))


# --- AlexNet ----------------------------------------------------------------

# Layer order per architecture: C conv, R relu, P pool, N LRN, I inner
# product; a trailing softmax is allowed.
ORDERS = {
    "caffenet": "CRPNCRPNCRCRCRPIRIRI",
    "alexnet": "CRNPCRNPCRCRCRPIRIRI",
}
_OP_CODES = {"Convolution": "C", "ReLU": "R", "Pooling": "P", "LRN": "N",
             "InnerProduct": "I", "Softmax": "S"}
# Layers that do not change the deployed forward pass.
IGNORED = {"Data", "ImageData", "WindowData", "MemoryData", "HDF5Data",
            "DummyData", "Input", "Dropout", "Split", "Silence", "Accuracy",
            "Flatten", "HDF5Output"}
# Geometry the AlexNet module hard-codes, (kernel, stride, pad) per conv.
_FIXED_CONV = {2: (5, 1, 2), 3: (3, 1, 1), 4: (3, 1, 1), 5: (3, 1, 1)}
_GROUPED = (2, 4, 5)
_POOL = (3, 2, 0)  # kernel, stride, pad.
_ORDER_WORDS = {"caffenet": "pool before norm", "alexnet": "norm before pool"}
_POOL_METHODS = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}


def is_alexnet(net: caffemodel.Net) -> bool:
  """Five convolutions then three inner products: an AlexNet-shaped net."""
  codes = "".join(_OP_CODES[l.type]
                  for l in net.by_type("Convolution", "InnerProduct"))
  return codes == "CCCCCIII"


def forward_layers(
    net: caffemodel.Net, path: str, network: str = "Caffe's AlexNet",
    op_codes: Mapping[str, str] = _OP_CODES) -> list[caffemodel.Layer]:
  """The layers of the deployed forward pass (types in `op_codes`), without a
  final softmax; data, dropout, loss and similar layers are skipped, and any
  other layer type is an error naming `network`."""
  out = []
  for layer in net.layers:
    if layer.type in op_codes:
      out.append(layer)
    elif layer.type not in IGNORED and not layer.type.endswith("Loss"):
      raise PortError(
          f"{path}: layer {layer.name!r} has type {layer.type!r}, which is not"
          f" part of {network}; this network cannot be converted. Its layers:"
          f" {net.summary()}")
  if out and out[-1].type == "Softmax":
    out = out[:-1]
  return out


def _spatial(p: dict[str, Any], key: str, default: int | None,
             where: str) -> int:
  """A square kernel/stride/pad value from Caffe's several spellings."""
  base = {"kernel_size": "kernel"}.get(key, key)
  h, w = p.get(f"{base}_h"), p.get(f"{base}_w")
  if h is not None or w is not None:
    values = [default if v is None else v for v in (h, w)]
  else:
    listed = list(p.get(key) or [])
    if len(listed) > 2:
      raise PortError(f"{where}: {key} has {len(listed)} values; only 2-D"
                      " layers are supported.")
    values = (listed * 2)[:2] if listed else [default, default]
  if values[0] is None:
    raise PortError(f"{where}: {key} is not set.")
  if values[0] != values[1]:
    raise PortError(f"{where}: {key} is {values[0]}x{values[1]}; only square"
                    " values are supported.")
  return int(values[0])


def _blob(layer: caffemodel.Layer, index: int, shape: tuple[int, ...],
          path: str) -> np.ndarray:
  """Blob `index` of `layer` as float32 of `shape`; legacy files add leading
  singleton axes (e.g. (1, 1, 1, 96) for a bias), which are accepted."""
  if index >= len(layer.blobs):
    raise PortError(
        f"{path}: layer {layer.name!r} has {len(layer.blobs)} blob(s), no"
        f" blob {index}. A network definition without trained weights cannot"
        " be converted.")
  blob = layer.blobs[index]
  strip = lambda s: tuple(s)[next((i for i, d in enumerate(s) if d != 1),
                                  len(s)):]
  if strip(blob.shape) != strip(shape):
    raise PortError(
        f"{path}: layer {layer.name!r} blob {index} has shape {blob.shape},"
        f" expected {shape} from the layer's parameters and its input.")
  return np.asarray(blob, np.float32).reshape(shape)


def _bias(layer: caffemodel.Layer, bias_term: bool, width: int,
          path: str) -> np.ndarray:
  if bias_term:  # A copy: a view would keep the whole file in memory.
    return _blob(layer, 1, (width,), path).copy()
  return np.zeros((width,), np.float32)


def check_global_average_pool(layer: caffemodel.Layer, side: int,
                              input_size: int, path: str) -> None:
  """A Pooling layer must average the whole side x side map (GoogLeNet's
  and ResNet's pool5 at the input size the network was built for)."""
  p = layer.param("pooling_param")
  if p["pool"] != 1 or not (p["global_pooling"] or (
      _spatial(p, "kernel_size", None, path) == side
      and _spatial(p, "stride", 1, path) == 1)):
    raise PortError(
        f"{path}: {layer.name} must average the whole {side}x{side} last map"
        f" at --input_size {input_size} (a {side}x{side}/1 average pool);"
        " give the input size the network was built for.")


def classifier(layer: caffemodel.Layer, inputs: int,
               path: str) -> dict[str, np.ndarray]:
  """An InnerProduct layer over `inputs` features as {kernel [in, out],
  bias}."""
  classes = int(layer.param("inner_product_param")["num_output"] or 0)
  weight = _blob(layer, 0, (classes, inputs), path)
  return {"kernel": np.ascontiguousarray(weight.T),
          "bias": _blob(layer, 1, (classes,), path).copy()}


def pool5_size(input_size: int, kernel: int, stride: int, pad: int) -> int:
  """pool5's height/width: conv1 rounds down, each max-pool rounds up."""
  pool = lambda s: -(-(s - _POOL[0]) // _POOL[1]) + 1
  size = (input_size + 2 * pad - kernel) // stride + 1
  for _ in range(3):  # conv2..conv5 keep the size; three pools shrink it.
    if size < _POOL[0]:
      return 0
    size = pool(size)
  return size


def input_size_hint(in_features: int, width5: int, conv1: tuple[int, int, int]
                     ) -> str:
  sizes = [n for n in range(conv1[0], 1025)
           if width5 * pool5_size(n, *conv1) ** 2 == in_features]
  if not sizes:
    return "no input size gives that; the file is not a consistent AlexNet."
  best = min(sizes, key=lambda n: abs(n - DEFAULT_INPUT_SIZE))
  return (f"Input sizes {sizes[0]} to {sizes[-1]} give that; pass e.g."
          f" --input_size {best}.")


def _detect_order(forward: list[caffemodel.Layer], options: Mapping[str, Any],
                  path: str, net: caffemodel.Net) -> str:
  """The architecture, from the order of pool and norm in the file."""
  codes = "".join(_OP_CODES[l.type] for l in forward)
  forced = options.get("arch")
  for arch, order in ORDERS.items():
    if codes == order:
      if forced and forced != arch:
        raise PortError(
            f"{path}: the file's layer order is {arch}'s"
            f" ({_ORDER_WORDS[arch]});"
            f" --arch {forced} would compute a different network. Drop --arch.")
      return arch
  if codes == "CCCCCIII":
    if forced not in ORDERS:
      raise PortError(
          f"{path}: the file holds only the weight layers, so caffenet (pool"
          " before norm) and alexnet (norm before pool) cannot be told apart;"
          " pass --arch caffenet or --arch alexnet.")
    return forced
  raise PortError(
      f"{path}: layer order {codes} (C conv, R relu, P pool, N norm, I inner"
      f" product) is neither caffenet's {ORDERS['caffenet']} nor alexnet's"
      f" {ORDERS['alexnet']}. Its layers: {net.summary()}")


def _check_pools_relus_lrn(forward, path) -> dict[str, float] | None:
  """Checks the non-weight layers; returns the (shared) LRN parameters."""
  lrn = None
  for layer in forward:
    where = f"{path}: layer {layer.name!r}"
    if layer.type == "ReLU":
      if layer.param("relu_param")["negative_slope"] != 0:
        raise PortError(f"{where}: leaky ReLU (negative_slope != 0) is not"
                        " AlexNet's ReLU.")
    elif layer.type == "Pooling":
      p = layer.param("pooling_param")
      got = (_spatial(p, "kernel_size", None, where),
             _spatial(p, "stride", 1, where), _spatial(p, "pad", 0, where))
      if p["pool"] != 0 or p["global_pooling"] or got != _POOL:
        method = _POOL_METHODS.get(p["pool"], p["pool"])
        raise PortError(
            f"{where}: {method} pooling, kernel/stride/pad {got},"
            f" global {p['global_pooling']}; inverter's AlexNet max-pools with"
            " kernel 3, stride 2, no padding.")
    elif layer.type == "LRN":
      p = layer.param("lrn_param")
      if p["norm_region"] != 0:
        raise PortError(f"{where}: WITHIN_CHANNEL LRN is not supported"
                        " (AlexNet normalises across channels).")
      this = dict(size=int(p["local_size"]), alpha=float32_value(p["alpha"]),
                  beta=float32_value(p["beta"]), k=float32_value(p["k"]))
      if this["size"] % 2 == 0:
        raise PortError(f"{where}: LRN local_size {this['size']} must be odd.")
      if lrn is not None and this != lrn:
        raise PortError(f"{where}: LRN parameters {this} differ from the first"
                        f" LRN's {lrn}; the module uses one set for both.")
      lrn = this
  return lrn


def convert_alexnet(net: caffemodel.Net, path: str,
                    options: Mapping[str, Any]) -> Ported:
  """Converts a Caffe AlexNet/CaffeNet (see the module docstring)."""
  forward = forward_layers(net, path)
  arch = _detect_order(forward, options, path, net)
  warnings = []
  lrn = _check_pools_relus_lrn(forward, path)
  cfg = presets.encoder_config(arch)
  if lrn is None:
    lrn = dict(cfg.lrn)
    warnings.append(
        f"The file holds no LRN layers; using the preset LRN parameters {lrn}"
        f" and --arch {arch} as given. Activations match the original only if"
        " these are the network's values.")
  convs = net.by_type("Convolution")
  ips = net.by_type("InnerProduct")
  params: dict[str, dict[str, np.ndarray]] = {}
  in_width, groups, conv1 = 3, None, None
  widths = []
  for i, layer in enumerate(convs, start=1):
    where = f"{path}: layer {layer.name!r} (conv{i})"
    p = layer.param("convolution_param")
    geometry = (_spatial(p, "kernel_size", None, where),
                _spatial(p, "stride", 1, where), _spatial(p, "pad", 0, where))
    if any(d != 1 for d in p["dilation"]) or p["axis"] != 1:
      raise PortError(f"{where}: dilated or non-channel-axis convolution is"
                      " not AlexNet's.")
    if i == 1:
      conv1 = geometry
    elif geometry != _FIXED_CONV[i]:
      raise PortError(
          f"{where}: kernel/stride/pad {geometry}; inverter's AlexNet uses"
          f" {_FIXED_CONV[i]} for conv{i}.")
    group = int(p["group"])
    if i in _GROUPED:
      if groups is None:
        groups = group
      elif group != groups:
        raise PortError(f"{where}: group {group}, but conv2 has {groups};"
                        " inverter's AlexNet uses one group count for conv2,"
                        " conv4 and conv5.")
    elif group != 1:
      raise PortError(f"{where}: group {group}; inverter's AlexNet groups only"
                      " conv2, conv4 and conv5.")
    width = int(p["num_output"] or 0)
    if not width:
      raise PortError(f"{where}: num_output is not set.")
    if in_width % group or width % group:
      raise PortError(f"{where}: {in_width} inputs and {width} outputs are not"
                      f" divisible by group {group}.")
    k = geometry[0]
    kernel = _blob(layer, 0, (width, in_width // group, k, k), path)
    params[f"conv{i}"] = dict(
        kernel=np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)),
        bias=_bias(layer, p["bias_term"], width, path))
    widths.append(width)
    in_width = width

  input_size = int(options.get("input_size") or DEFAULT_INPUT_SIZE)
  side = pool5_size(input_size, *conv1)
  if side < 1:
    raise PortError(f"--input_size {input_size} is too small for this"
                    " network: pool5 would be empty.")
  in_features = widths[-1] * side * side
  fc_out = []
  for j, layer in enumerate(ips, start=6):
    where = f"{path}: layer {layer.name!r} (fc{j})"
    p = layer.param("inner_product_param")
    if p["axis"] != 1:
      raise PortError(f"{where}: axis {p['axis']}; AlexNet's fc layers use 1.")
    out = int(p["num_output"] or 0)
    if not out:
      raise PortError(f"{where}: num_output is not set.")
    stored = layer.blobs[0].size if layer.blobs else 0
    if j == 6 and layer.blobs and stored != out * in_features:
      raise PortError(
          f"{path}: fc6 ({layer.name!r}) has {stored} weights, i.e."
          f" {stored // out if out else 0} inputs per output; with --input_size"
          f" {input_size} pool5 is {widths[-1]}x{side}x{side} ="
          f" {in_features}. "
          + input_size_hint(stored // out if out else 0, widths[-1], conv1))
    shape = (in_features, out) if p["transpose"] else (out, in_features)
    weight = _blob(layer, 0, shape, path)
    # -> [in, out], copied out of the file's bytes.
    weight = weight.copy() if p["transpose"] else np.ascontiguousarray(weight.T)
    if j == 6:  # Rows (C, H, W) -> (H, W, C); whole rows move (fast).
      weight = weight.reshape(widths[-1], side * side, out).transpose(
          1, 0, 2).reshape(in_features, out)
    params[f"fc{j}"] = dict(kernel=np.ascontiguousarray(weight),
                            bias=_bias(layer, p["bias_term"], out, path))
    fc_out.append(out)
    in_features = out
  if fc_out[0] != fc_out[1]:
    raise PortError(f"{path}: fc6 has {fc_out[0]} outputs and fc7"
                    f" {fc_out[1]}; inverter's AlexNet uses one fc width.")
  common.check_finite(params, path)

  cfg.input_size = input_size
  cfg.conv1_kernel, cfg.conv1_stride, cfg.conv1_padding = conv1
  cfg.widths = tuple(widths)
  cfg.fc_width = fc_out[0]
  cfg.num_classes = fc_out[2]
  cfg.groups = groups
  cfg.lrn = lrn
  preprocessing, extra = caffe_preprocessing(options, cfg)
  source = common.source_info(path, "caffemodel")
  source.update(net_name=net.name, layer_format=(
      "V1LayerParameter (layers)" if net.legacy else "LayerParameter (layer)"))
  return Ported(encoder=cfg, params=params, preprocessing=preprocessing,
                source=source, extra_files=extra, warnings=warnings)


register_caffe_net(CaffeNet("AlexNet/CaffeNet", is_alexnet, convert_alexnet))

FORMAT = common.register(common.Format(
    name="caffemodel", sniff=caffemodel.looks_like_net, convert=convert_file))
