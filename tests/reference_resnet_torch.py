"""Independent PyTorch forward passes of ResNet in its torchvision and Caffe
layouts, for parity tests (torchvision itself is not installed, so the
networks are written out with torch.nn.functional, batch norm in eval mode).

Inputs are NCHW tensors already in the network's own preprocessing; every
function returns {tap name: tensor} with our tap names (NCHW for maps).
Weights are state dicts under the original key names: torchvision's
(`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
`layer1.0.downsample.0.weight`, `fc.weight`), or Caffe's layer names with
BatchNorm and Scale kept apart as Caffe has them (`conv1.weight`,
`conv1.bias`, `bn_conv1.mean`, `bn_conv1.var`, `scale_conv1.weight`,
`scale_conv1.bias`, `res2a_branch2a.weight`, ..., `fc1000.weight`).
"""

from __future__ import annotations

import string

import torch
import torch.nn.functional as F

EPS = 1e-5


def _letter(i: int) -> str:
  return string.ascii_lowercase[i]


def torchvision_resnet(sd, x, blocks, bottleneck=True):
  """torchvision.models.ResNet.forward (stride on the 3x3: v1.5)."""
  taps = {}

  def bn(h, key):
    return F.batch_norm(h, sd[f"{key}.running_mean"], sd[f"{key}.running_var"],
                        sd[f"{key}.weight"], sd[f"{key}.bias"], False, 0.0,
                        EPS)

  h = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
  h = taps["conv1"] = F.max_pool2d(h, 3, 2, 1)
  for s, count in enumerate(blocks):
    for b in range(count):
      key = f"layer{s + 1}.{b}"
      stride = 2 if s > 0 and b == 0 else 1
      if bottleneck:
        y = F.relu(bn(F.conv2d(h, sd[f"{key}.conv1.weight"]), f"{key}.bn1"))
        y = F.relu(bn(F.conv2d(y, sd[f"{key}.conv2.weight"], stride=stride,
                               padding=1), f"{key}.bn2"))
        y = bn(F.conv2d(y, sd[f"{key}.conv3.weight"]), f"{key}.bn3")
      else:
        y = F.relu(bn(F.conv2d(h, sd[f"{key}.conv1.weight"], stride=stride,
                               padding=1), f"{key}.bn1"))
        y = bn(F.conv2d(y, sd[f"{key}.conv2.weight"], padding=1), f"{key}.bn2")
      if f"{key}.downsample.0.weight" in sd:
        h = bn(F.conv2d(h, sd[f"{key}.downsample.0.weight"], stride=stride),
               f"{key}.downsample.1")
      h = taps[f"res{s + 2}{_letter(b)}"] = F.relu(y + h)
    taps[f"res{s + 2}"] = h
  h = taps["pool5"] = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
  h = taps["fc1000"] = F.linear(h, sd["fc.weight"], sd["fc.bias"])
  taps["prob"] = F.softmax(h, dim=1)
  return taps


def caffe_resnet(sd, x, blocks):
  """ResNet-50-deploy.prototxt: stride on branch2a and branch1, conv1 with
  bias, pool1 3x3/2 rounding up, BatchNorm (use_global_stats) then Scale,
  pool5 averaging the whole last map."""
  taps = {}

  def bn_scale(h, bn, scale):
    h = F.batch_norm(h, sd[f"{bn}.mean"], sd[f"{bn}.var"], None, None, False,
                     0.0, EPS)
    return (h * sd[f"{scale}.weight"][None, :, None, None]
            + sd[f"{scale}.bias"][None, :, None, None])

  h = F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], stride=2, padding=3)
  h = F.relu(bn_scale(h, "bn_conv1", "scale_conv1"))
  h = taps["conv1"] = F.max_pool2d(h, 3, 2, ceil_mode=True)
  for s, count in enumerate(blocks):
    for b in range(count):
      name = f"{s + 2}{_letter(b)}"
      stride = 2 if s > 0 and b == 0 else 1

      def unit(h, branch, stride=1, padding=0):
        h = F.conv2d(h, sd[f"res{name}_branch{branch}.weight"], stride=stride,
                     padding=padding)
        return bn_scale(h, f"bn{name}_branch{branch}",
                        f"scale{name}_branch{branch}")

      y = F.relu(unit(h, "2a", stride))
      y = F.relu(unit(y, "2b", padding=1))
      y = unit(y, "2c")
      if f"res{name}_branch1.weight" in sd:
        h = unit(h, "1", stride)
      h = taps[f"res{name}"] = F.relu(y + h)
    taps[f"res{s + 2}"] = h
  h = taps["pool5"] = torch.flatten(F.avg_pool2d(h, h.shape[-1]), 1)
  h = taps["fc1000"] = F.linear(h, sd["fc1000.weight"], sd["fc1000.bias"])
  taps["prob"] = F.softmax(h, dim=1)
  return taps


def _bn_state(prefix, width, gen, torchvision=True):
  stats = {"running_mean" if torchvision else "mean":
           torch.randn(width, generator=gen) * 0.1,
           "running_var" if torchvision else "var":
           torch.rand(width, generator=gen) + 0.5}
  if torchvision:
    stats.update(weight=torch.rand(width, generator=gen) + 0.5,
                 bias=torch.randn(width, generator=gen) * 0.1,
                 num_batches_tracked=torch.tensor(7))
  return {f"{prefix}.{k}": v for k, v in stats.items()}


def _kernel(out, inp, k, gen):
  return torch.randn(out, inp, k, k, generator=gen) * (2.0 / (inp * k * k)) ** .5


def random_torchvision_resnet(stem, widths, blocks, classes, bottleneck=True,
                              seed=0):
  """A state dict with torchvision's keys and random weights and statistics."""
  gen = torch.Generator().manual_seed(seed)
  expansion = 4 if bottleneck else 1
  sd = {"conv1.weight": _kernel(stem, 3, 7, gen), **_bn_state("bn1", stem, gen)}
  channels = stem
  for s, (width, count) in enumerate(zip(widths, blocks)):
    for b in range(count):
      key = f"layer{s + 1}.{b}"
      shapes = ([(width, channels, 1), (width, width, 3),
                 (width * 4, width, 1)] if bottleneck else
                [(width, channels, 3), (width, width, 3)])
      for i, (out, inp, k) in enumerate(shapes):
        sd[f"{key}.conv{i + 1}.weight"] = _kernel(out, inp, k, gen)
        sd.update(_bn_state(f"{key}.bn{i + 1}", out, gen))
      if b == 0 and (s > 0 or channels != width * expansion):
        sd[f"{key}.downsample.0.weight"] = _kernel(width * expansion,
                                                   channels, 1, gen)
        sd.update(_bn_state(f"{key}.downsample.1", width * expansion, gen))
      channels = width * expansion
  sd["fc.weight"] = torch.randn(classes, channels, generator=gen) * 0.05
  sd["fc.bias"] = torch.randn(classes, generator=gen) * 0.1
  return sd


def random_caffe_resnet(stem, widths, blocks, classes, seed=0):
  """A state dict under Caffe's layer names (see the module docstring) with
  random weights and statistics: a bottleneck ResNet as the authors built
  it."""
  gen = torch.Generator().manual_seed(seed)
  sd = {"conv1.weight": _kernel(stem, 3, 7, gen),
        "conv1.bias": torch.randn(stem, generator=gen) * 0.1}

  def bn(name, width):
    sd.update({f"bn{name}.mean": torch.randn(width, generator=gen) * 0.1,
               f"bn{name}.var": torch.rand(width, generator=gen) + 0.5,
               f"scale{name}.weight": torch.rand(width, generator=gen) + 0.5,
               f"scale{name}.bias": torch.randn(width, generator=gen) * 0.1})

  bn("_conv1", stem)
  channels = stem
  for s, (width, count) in enumerate(zip(widths, blocks)):
    for b in range(count):
      name = f"{s + 2}{_letter(b)}"
      for unit, (out, inp, k) in zip(("2a", "2b", "2c"), [
          (width, channels, 1), (width, width, 3), (width * 4, width, 1)]):
        sd[f"res{name}_branch{unit}.weight"] = _kernel(out, inp, k, gen)
        bn(f"{name}_branch{unit}", out)
      if b == 0:
        sd[f"res{name}_branch1.weight"] = _kernel(width * 4, channels, 1, gen)
        bn(f"{name}_branch1", width * 4)
      channels = width * 4
  sd["fc1000.weight"] = torch.randn(classes, channels, generator=gen) * 0.05
  sd["fc1000.bias"] = torch.randn(classes, generator=gen) * 0.1
  return sd
