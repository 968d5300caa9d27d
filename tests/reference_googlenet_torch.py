"""Independent PyTorch forward passes of GoogLeNet in its torchvision and
Caffe (bvlc_googlenet) layouts, for parity tests (torchvision itself is not
installed, so the networks are written out with torch.nn.functional, batch
norm in eval mode).

Every function returns {tap name: tensor} with our tap names (NCHW for
maps). Weights are state dicts under the original key names: torchvision's
(`conv1.conv.weight`, `conv1.bn.running_mean`, `inception3a.branch2.1.conv.
weight`, `fc.weight`, plus the unused `aux1.*`), or Caffe's layer names
(`conv1/7x7_s2.weight`, `conv2/3x3_reduce.bias`, `inception_3a/5x5.weight`,
`loss3/classifier.weight`, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODULES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _concat_inception(h, conv, name, caffe):
  third = 5 if caffe else 3
  return torch.cat([
      conv(h, f"{name}1", 1),
      conv(conv(h, f"{name}2r", 1), f"{name}2", 3),
      conv(conv(h, f"{name}3r", 1), f"{name}3", third),
      conv(F.max_pool2d(h, 3, 1, 1, ceil_mode=True), f"{name}4", 1)], dim=1)


def torchvision_googlenet(sd, x):
  """torchvision.models.GoogLeNet.forward in eval mode, transform_input on:
  `x` is the ImageNet-normalised RGB input, as torchvision is fed."""
  taps = {}
  x = torch.cat([x[:, c:c + 1] * (IMAGENET_STD[c] / 0.5)
                 + (IMAGENET_MEAN[c] - 0.5) / 0.5 for c in range(3)], dim=1)
  keys = {"conv1": "conv1", "conv2r": "conv2", "conv2": "conv3"}
  for m in MODULES:
    name = f"inception{m}"
    keys.update({f"{m}1": f"{name}.branch1", f"{m}2r": f"{name}.branch2.0",
                 f"{m}2": f"{name}.branch2.1", f"{m}3r": f"{name}.branch3.0",
                 f"{m}3": f"{name}.branch3.1", f"{m}4": f"{name}.branch4.1"})

  def conv(h, short, kernel, stride=1):
    key = keys[short]
    h = F.conv2d(h, sd[f"{key}.conv.weight"], stride=stride,
                 padding=(kernel - 1) // 2)
    h = F.batch_norm(h, sd[f"{key}.bn.running_mean"],
                     sd[f"{key}.bn.running_var"], sd[f"{key}.bn.weight"],
                     sd[f"{key}.bn.bias"], False, 0.0, 0.001)
    return F.relu(h)

  h = conv(x, "conv1", 7, 2)
  h = taps["conv1"] = F.max_pool2d(h, 3, 2, ceil_mode=True)
  h = conv(conv(h, "conv2r", 1), "conv2", 3)
  h = taps["conv2"] = F.max_pool2d(h, 3, 2, ceil_mode=True)
  for m in MODULES:
    h = taps[f"inception_{m}"] = _concat_inception(h, conv, m, caffe=False)
    if m == "3b":
      h = taps["pool3"] = F.max_pool2d(h, 3, 2, ceil_mode=True)
    elif m == "4e":
      h = taps["pool4"] = F.max_pool2d(h, 2, 2, ceil_mode=True)
  h = taps["pool5"] = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
  h = taps["logits"] = F.linear(h, sd["fc.weight"], sd["fc.bias"])
  taps["prob"] = F.softmax(h, dim=1)
  return taps


def caffe_googlenet(sd, x):
  """bvlc_googlenet's deploy.prototxt: `x` is BGR 0-255 minus the mean."""
  taps = {}
  keys = {"conv1": "conv1/7x7_s2", "conv2r": "conv2/3x3_reduce",
          "conv2": "conv2/3x3"}
  for m in MODULES:
    name = f"inception_{m}"
    keys.update({f"{m}1": f"{name}/1x1", f"{m}2r": f"{name}/3x3_reduce",
                 f"{m}2": f"{name}/3x3", f"{m}3r": f"{name}/5x5_reduce",
                 f"{m}3": f"{name}/5x5", f"{m}4": f"{name}/pool_proj"})

  def conv(h, short, kernel, stride=1):
    key = keys[short]
    return F.relu(F.conv2d(h, sd[f"{key}.weight"], sd[f"{key}.bias"],
                           stride=stride, padding=(kernel - 1) // 2))

  lrn = lambda h: F.local_response_norm(h, 5, alpha=1e-4, beta=0.75, k=1.0)
  h = conv(x, "conv1", 7, 2)
  h = taps["conv1"] = lrn(F.max_pool2d(h, 3, 2, ceil_mode=True))
  h = lrn(conv(conv(h, "conv2r", 1), "conv2", 3))
  h = taps["conv2"] = F.max_pool2d(h, 3, 2, ceil_mode=True)
  for m in MODULES:
    h = taps[f"inception_{m}"] = _concat_inception(h, conv, m, caffe=True)
    if m in ("3b", "4e"):
      h = taps[f"pool{m[0]}"] = F.max_pool2d(h, 3, 2, ceil_mode=True)
  h = taps["pool5"] = torch.flatten(F.avg_pool2d(h, h.shape[-1]), 1)
  h = taps["logits"] = F.linear(h, sd["loss3/classifier.weight"],
                                sd["loss3/classifier.bias"])
  taps["prob"] = F.softmax(h, dim=1)
  return taps


def _kernel(out, inp, k, gen):
  return torch.randn(out, inp, k, k, generator=gen) * (2.0 / (inp * k * k)) ** .5


def _shapes(stem, modules, caffe):
  """(our short name, out, in, kernel) of every convolution, in order."""
  out = [("conv1", stem[0], 3, 7), ("conv2r", stem[1], stem[0], 1),
         ("conv2", stem[2], stem[1], 3)]
  channels = stem[2]
  for m, (w1, w3r, w3, w5r, w5, wp) in zip(MODULES, modules):
    out += [(f"{m}1", w1, channels, 1), (f"{m}2r", w3r, channels, 1),
            (f"{m}2", w3, w3r, 3), (f"{m}3r", w5r, channels, 1),
            (f"{m}3", w5, w5r, 5 if caffe else 3), (f"{m}4", wp, channels, 1)]
    channels = w1 + w3 + w5 + wp
  return out, channels


def random_torchvision_googlenet(stem, modules, classes, seed=0):
  """torchvision's keys, random weights and statistics, and aux heads."""
  gen = torch.Generator().manual_seed(seed)
  convs, channels = _shapes(stem, modules, caffe=False)
  names = {"conv1": "conv1", "conv2r": "conv2", "conv2": "conv3"}
  sd = {}
  for short, out, inp, k in convs:
    if short in names:
      key = names[short]
    else:
      m, branch = short[:2], short[2:]
      key = f"inception{m}." + {"1": "branch1", "2r": "branch2.0",
                                "2": "branch2.1", "3r": "branch3.0",
                                "3": "branch3.1", "4": "branch4.1"}[branch]
    sd[f"{key}.conv.weight"] = _kernel(out, inp, k, gen)
    sd.update({f"{key}.bn.running_mean": torch.randn(out, generator=gen) * .1,
               f"{key}.bn.running_var": torch.rand(out, generator=gen) + .5,
               f"{key}.bn.weight": torch.rand(out, generator=gen) + .5,
               f"{key}.bn.bias": torch.randn(out, generator=gen) * .1,
               f"{key}.bn.num_batches_tracked": torch.tensor(3)})
  for aux in ("aux1", "aux2"):  # Present in the file, unused by forward.
    sd[f"{aux}.conv.conv.weight"] = torch.randn(8, 4, 1, 1, generator=gen)
    sd[f"{aux}.fc1.weight"] = torch.randn(16, 32, generator=gen)
  sd["fc.weight"] = torch.randn(classes, channels, generator=gen) * 0.05
  sd["fc.bias"] = torch.randn(classes, generator=gen) * 0.1
  return sd


def random_caffe_googlenet(stem, modules, classes, seed=0):
  """Caffe's layer names, random weights and biases."""
  gen = torch.Generator().manual_seed(seed)
  convs, channels = _shapes(stem, modules, caffe=True)
  names = {"conv1": "conv1/7x7_s2", "conv2r": "conv2/3x3_reduce",
           "conv2": "conv2/3x3"}
  sd = {}
  for short, out, inp, k in convs:
    if short in names:
      key = names[short]
    else:
      m, branch = short[:2], short[2:]
      key = f"inception_{m}/" + {"1": "1x1", "2r": "3x3_reduce", "2": "3x3",
                                 "3r": "5x5_reduce", "3": "5x5",
                                 "4": "pool_proj"}[branch]
    sd[f"{key}.weight"] = _kernel(out, inp, k, gen)
    sd[f"{key}.bias"] = torch.randn(out, generator=gen) * 0.1
  sd["loss3/classifier.weight"] = torch.randn(classes, channels,
                                              generator=gen) * 0.05
  sd["loss3/classifier.bias"] = torch.randn(classes, generator=gen) * 0.1
  return sd
