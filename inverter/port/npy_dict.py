"""Format 'npy_dict': the widely shared `bvlc_alexnet.npy` -> our encoder.

The file is a NumPy pickle of a dict {'conv1': [W, b], ..., 'fc8': [W, b]}
converted from Caffe's bvlc_alexnet.caffemodel (by caffe-tensorflow): conv
kernels are HWIO with the grouped layers' per-group input width (conv2's W is
5x5x48x256), fc6's rows already follow pool5 flattened in H, W, C order, fc
kernels are [in, out], and conv1 still expects BGR input. So the arrays map onto
`inverter.models.alexnet.AlexNet` unchanged; the conversion validates them.

The network is Caffe's bvlc_alexnet (conv-relu-norm-pool, conv1 11x11 stride 4
without padding, LRN size 5, alpha 1e-4, beta 0.75, k 1): the file holds no
hyper-parameters, so these are taken from Caffe's definition. (Scripts that
ship with the file pad conv1 'SAME', giving 57x57 instead of Caffe's 55x55;
the weights were trained with Caffe's unpadded conv1, which is what we build.)

Security: the file is a pickle; loading it (np.load with allow_pickle) can run
arbitrary code. Only convert files from a source you trust.
"""

from __future__ import annotations

import zipfile
from typing import Any, Mapping

import numpy as np

from inverter import presets
from inverter.port import caffe, common
from inverter.port.common import PortError, Ported

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
ARCH = "alexnet"
# bvlc_alexnet's conv1, which the file does not record: kernel, stride, pad.
CONV1_STRIDE, CONV1_PADDING = 4, 0
_CONV_KERNEL = {2: 5, 3: 3, 4: 3, 5: 3}
_GROUPED = (2, 4, 5)


def sniff(path: str) -> bool:
  """A .npy file holding a single pickled object (not a plain array)."""
  try:
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
      else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
  except (OSError, ValueError):
    return False
  return shape == () and dtype == np.dtype(object)


def _load_dict(path: str) -> dict[str, Any]:
  try:
    # Pickled by Python 2: latin1 maps its byte strings one to one.
    data = np.load(path, allow_pickle=True, encoding="latin1")
  except (OSError, ValueError, EOFError, zipfile.BadZipFile,
          ModuleNotFoundError, AttributeError) as e:
    raise PortError(f"{path}: not a readable NumPy pickle ({e}).") from None
  if isinstance(data, np.ndarray) and data.shape == () and data.dtype == object:
    data = data.item()
  if not isinstance(data, dict):
    raise PortError(
        f"{path}: holds a {type(data).__name__}"
        f"{' of shape ' + str(data.shape) if hasattr(data, 'shape') else ''},"
        " not the dict {'conv1': [W, b], ..., 'fc8': [W, b]} of"
        " bvlc_alexnet.npy.")
  keys = {str(k) for k in data}
  missing = [k for k in LAYERS if k not in keys]
  extra = sorted(keys - set(LAYERS))
  if missing or extra:
    raise PortError(
        f"{path}: keys {sorted(keys)}; bvlc_alexnet.npy has exactly"
        f" {', '.join(LAYERS)}"
        + (f" (missing {', '.join(missing)})" if missing else "")
        + (f" (unexpected {', '.join(extra)})" if extra else "") + ".")
  out = {}
  for name in LAYERS:
    value = data[name]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
      raise PortError(f"{path}: {name} must be [W, b], got"
                      f" {type(value).__name__} of length"
                      f" {len(value) if hasattr(value, '__len__') else '?'}.")
    w, b = (np.asarray(v) for v in value)
    if w.dtype.kind != "f" or b.dtype.kind != "f":
      raise PortError(f"{path}: {name} holds {w.dtype}/{b.dtype} arrays, not"
                      " floating point.")
    out[name] = (w.astype(np.float32), b.astype(np.float32))
  return out


def _expect(path: str, name: str, what: str, array: np.ndarray,
            shape: tuple[int, ...]) -> None:
  if array.shape != shape:
    raise PortError(f"{path}: {name} {what} has shape {array.shape}, expected"
                    f" {shape}.")


def convert(path: str, options: Mapping[str, Any]) -> Ported:
  """Validates bvlc_alexnet.npy's arrays and wraps them as a Ported encoder."""
  if options.get("arch") not in (None, ARCH):
    raise PortError(f"{path}: bvlc_alexnet.npy is the alexnet architecture"
                    f" (norm before pool); --arch {options['arch']} does not"
                    " apply. Drop --arch.")
  layers = _load_dict(path)
  w1 = layers["conv1"][0]
  if w1.ndim != 4 or w1.shape[2] != 3 or w1.shape[0] != w1.shape[1]:
    raise PortError(f"{path}: conv1 W has shape {w1.shape}, expected a square"
                    " HWIO kernel over 3 input channels, e.g. (11, 11, 3, 96).")
  widths = [int(layers[f"conv{i}"][0].shape[-1]) for i in range(1, 6)]
  w2 = layers["conv2"][0]
  if w2.ndim != 4 or w2.shape[2] == 0 or widths[0] % w2.shape[2]:
    raise PortError(f"{path}: conv2 W has shape {w2.shape}; its input width"
                    f" must divide conv1's {widths[0]} outputs.")
  groups = widths[0] // int(w2.shape[2])
  params = {}
  in_width = 3
  for i in range(1, 6):
    name = f"conv{i}"
    w, b = layers[name]
    k = w1.shape[0] if i == 1 else _CONV_KERNEL[i]
    g = groups if i in _GROUPED else 1
    if in_width % g:
      raise PortError(f"{path}: {name}: {in_width} inputs are not divisible"
                      f" by {g} groups.")
    _expect(path, name, "W", w, (k, k, in_width // g, widths[i - 1]))
    _expect(path, name, "b", b, (widths[i - 1],))
    params[name] = dict(kernel=w, bias=b)
    in_width = widths[i - 1]

  input_size = int(options.get("input_size") or caffe.DEFAULT_INPUT_SIZE)
  conv1 = (int(w1.shape[0]), CONV1_STRIDE, CONV1_PADDING)
  side = caffe.pool5_size(input_size, *conv1)
  if side < 1:
    raise PortError(f"--input_size {input_size} is too small for this"
                    " network: pool5 would be empty.")
  fc6_in = widths[-1] * side * side
  fc_width = int(layers["fc6"][0].shape[-1])
  num_classes = int(layers["fc8"][0].shape[-1])
  w6 = layers["fc6"][0]
  if w6.ndim == 2 and w6.shape[0] != fc6_in:
    raise PortError(
        f"{path}: fc6 W has {w6.shape[0]} rows; with --input_size {input_size}"
        f" pool5 is {side}x{side}x{widths[-1]} = {fc6_in}. "
        + caffe.input_size_hint(
            w6.shape[0], widths[-1], conv1))
  for name, shape in (("fc6", (fc6_in, fc_width)),
                      ("fc7", (fc_width, fc_width)),
                      ("fc8", (fc_width, num_classes))):
    w, b = layers[name]
    _expect(path, name, "W", w, shape)
    _expect(path, name, "b", b, (shape[1],))
    params[name] = dict(kernel=w, bias=b)
  common.check_finite(params, path)

  cfg = presets.encoder_config(ARCH)
  cfg.input_size = input_size
  cfg.conv1_kernel, cfg.conv1_stride, cfg.conv1_padding = conv1
  cfg.widths = tuple(widths)
  cfg.fc_width = fc_width
  cfg.num_classes = num_classes
  cfg.groups = groups
  preprocessing, extra = caffe.caffe_preprocessing(options, cfg)
  warnings = [
      "bvlc_alexnet.npy records no hyper-parameters: conv1 stride 4 without"
      " padding and LRN (size 5, alpha 1e-4, beta 0.75, k 1) are Caffe's"
      " bvlc_alexnet values."]
  return Ported(encoder=cfg, params=params, preprocessing=preprocessing,
                source=common.source_info(path, "npy_dict"),
                extra_files=extra, warnings=warnings)


FORMAT = common.register(common.Format(name="npy_dict", sniff=sniff,
                                       convert=convert))
