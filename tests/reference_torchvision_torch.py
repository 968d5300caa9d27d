"""Independent PyTorch forward passes of torchvision AlexNet and of VGG-16 in
its torchvision and Caffe layouts, for parity tests (torchvision itself is
not installed, so the networks are written out with torch.nn.functional).

Inputs are NCHW tensors already in the network's own preprocessing; every
function returns {tap name: tensor} with our tap names, NCHW for maps.
Weights are state dicts of torch tensors under the original key names:
torchvision's `features.N.*` / `classifier.N.*`, or Caffe's layer names
(`conv1_1.weight`, ..., `fc8.bias`) for the Caffe VGG-16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VGG16_BLOCKS = (2, 2, 3, 3, 3)


def torchvision_alexnet(sd: dict[str, torch.Tensor],
                        x: torch.Tensor) -> dict[str, torch.Tensor]:
  """torchvision.models.AlexNet.forward, in eval mode."""
  taps = {}

  def conv(i, key, stride=1, padding=1):
    nonlocal h
    h = taps[f"conv{i}"] = F.conv2d(h, sd[f"{key}.weight"], sd[f"{key}.bias"],
                                    stride=stride, padding=padding)
    h = taps[f"relu{i}"] = F.relu(h)

  h = x
  conv(1, "features.0", stride=4, padding=2)
  h = taps["pool1"] = F.max_pool2d(h, 3, 2)
  conv(2, "features.3", padding=2)
  h = taps["pool2"] = F.max_pool2d(h, 3, 2)
  conv(3, "features.6")
  conv(4, "features.8")
  conv(5, "features.10")
  h = taps["pool5"] = F.max_pool2d(h, 3, 2)
  h = torch.flatten(F.adaptive_avg_pool2d(h, (6, 6)), 1)
  _classifier(sd, h, taps, ("classifier.1", "classifier.4", "classifier.6"))
  return taps


def torchvision_vgg16(sd: dict[str, torch.Tensor],
                      x: torch.Tensor) -> dict[str, torch.Tensor]:
  """torchvision.models.vgg16 forward, in eval mode: floor pooling, then an
  adaptive average pool to 7x7 before the classifier."""
  keys, index = [], 0
  for depth in VGG16_BLOCKS:
    keys.append([f"features.{index + 2 * i}" for i in range(depth)])
    index += 2 * depth + 1  # conv, relu per layer; then the pool.
  taps = {}
  h = _vgg_features(sd, x, keys, taps, ceil_mode=False)
  h = torch.flatten(F.adaptive_avg_pool2d(h, (7, 7)), 1)
  _classifier(sd, h, taps, ("classifier.0", "classifier.3", "classifier.6"))
  return taps


def caffe_vgg16(sd: dict[str, torch.Tensor],
                x: torch.Tensor) -> dict[str, torch.Tensor]:
  """VGG_ILSVRC_16_layers as Caffe runs it: ceil-rounded pooling, and fc6
  reading pool5 flattened in C, H, W order."""
  keys = [[f"conv{b + 1}_{i + 1}" for i in range(depth)]
          for b, depth in enumerate(VGG16_BLOCKS)]
  taps = {}
  h = _vgg_features(sd, x, keys, taps, ceil_mode=True)
  _classifier(sd, torch.flatten(h, 1), taps, ("fc6", "fc7", "fc8"))
  return taps


def _vgg_features(sd, x, keys, taps, ceil_mode):
  h = x
  for b, block in enumerate(keys):
    for i, key in enumerate(block):
      name = f"{b + 1}_{i + 1}"
      h = taps[f"conv{name}"] = F.conv2d(h, sd[f"{key}.weight"],
                                         sd[f"{key}.bias"], padding=1)
      h = taps[f"relu{name}"] = F.relu(h)
    h = taps[f"pool{b + 1}"] = F.max_pool2d(h, 2, 2, ceil_mode=ceil_mode)
  return h


def _classifier(sd, h, taps, keys):
  fc6, fc7, fc8 = keys
  h = taps["fc6"] = F.linear(h, sd[f"{fc6}.weight"], sd[f"{fc6}.bias"])
  h = taps["relu6"] = F.relu(h)
  h = taps["fc7"] = F.linear(h, sd[f"{fc7}.weight"], sd[f"{fc7}.bias"])
  h = taps["relu7"] = F.relu(h)
  h = taps["fc8"] = F.linear(h, sd[f"{fc8}.weight"], sd[f"{fc8}.bias"])
  taps["prob"] = F.softmax(h, dim=1)


# --------------------------------------------------------------------------
# Random weights under the original key names (He-scaled, so activations stay
# of order one through every layer and relative errors are meaningful).
# --------------------------------------------------------------------------


def _he(gen, *shape):
  fan_in = 1
  for s in shape[1:]:
    fan_in *= s
  return torch.randn(*shape, generator=gen) * (2.0 / fan_in) ** 0.5


def _layer(sd, gen, key, *shape):
  sd[f"{key}.weight"] = _he(gen, *shape)
  sd[f"{key}.bias"] = 0.1 * torch.randn(shape[0], generator=gen)


def random_torchvision_alexnet(widths=(64, 192, 384, 256, 256), fc=4096,
                               classes=1000, seed=0) -> dict:
  gen = torch.Generator().manual_seed(seed)
  sd = {}
  cin = 3
  for idx, kernel, width in zip((0, 3, 6, 8, 10), (11, 5, 3, 3, 3), widths):
    _layer(sd, gen, f"features.{idx}", width, cin, kernel, kernel)
    cin = width
  _layer(sd, gen, "classifier.1", fc, cin * 36)
  _layer(sd, gen, "classifier.4", fc, fc)
  _layer(sd, gen, "classifier.6", classes, fc)
  return sd


def random_vgg16(layout="torchvision", widths=(64, 128, 256, 512, 512),
                 fc=4096, classes=1000, pool5=7, seed=0) -> dict:
  """`layout` 'torchvision' (features.N / classifier.N, fc6 reads 7x7) or
  'caffe' (conv1_1 ... fc8, fc6 reads pool5 x pool5)."""
  gen = torch.Generator().manual_seed(seed)
  sd = {}
  cin, index = 3, 0
  for b, (depth, width) in enumerate(zip(VGG16_BLOCKS, widths)):
    for i in range(depth):
      key = (f"features.{index}" if layout == "torchvision"
             else f"conv{b + 1}_{i + 1}")
      _layer(sd, gen, key, width, cin, 3, 3)
      cin, index = width, index + 2
    index += 1
  side = 7 if layout == "torchvision" else pool5
  names = (("classifier.0", "classifier.3", "classifier.6")
           if layout == "torchvision" else ("fc6", "fc7", "fc8"))
  _layer(sd, gen, names[0], fc, cin * side * side)
  _layer(sd, gen, names[1], fc, fc)
  _layer(sd, gen, names[2], classes, fc)
  return sd
