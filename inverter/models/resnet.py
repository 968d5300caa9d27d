"""ResNet (He et al., CVPR 2016), returning every tap.

Two published layouts of ResNet-50:
  * `resnet50`: torchvision (resnet50-0676ba61.pth, IMAGENET1K_V1, and
    resnet50-11ad3fa6.pth, IMAGENET1K_V2: the same network): the stride of a
    stage's first bottleneck on its 3x3 convolution ("ResNet v1.5"), conv1
    without bias, pool1 3x3/2 with 1 pixel of padding rounding down, RGB
    input normalised by the ImageNet mean/std;
  * `caffe_resnet50`: the authors' Caffe release (ResNet-50-model.caffemodel,
    KaimingHe/deep-residual-networks): the stride on the first 1x1
    convolution (and the projection), conv1 with a bias, pool1 3x3/2 without
    padding rounding up (Caffe), BGR 0-255 minus the per-pixel mean image.
Both: batch norm after every convolution (Caffe's BatchNorm + Scale pair,
eps 1e-5 in both; from the stored statistics, except when trained from
scratch, see layers.BatchNorm), projection shortcuts on each
stage's first block, global average pooling (Caffe's 7x7 pool5 at 224),
fc1000, softmax. `block="basic"` builds ResNet-18/34-style blocks (two 3x3
convolutions) for reduced networks trained here.

Taps, Caffe's blob names: conv1 (after pool1), res2a, res2b, ... (every
block's output, after its ReLU), res2 .. res5 (each stage's output, the same
array as its last block's), pool5 ([N, 4 * width]), fc1000, prob.
Parameters are named after Caffe's layers: conv1 / bn_conv1;
res2a_branch2a / bn2a_branch2a (2b, 2c), res2a_branch1 / bn2a_branch1 (the
projection); fc1000. A batch norm holds {scale, bias, mean, var}.
"""

from __future__ import annotations

import string
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inverter.models import layers, pooling, stages

TORCHVISION_ARCH = "resnet50"
CAFFE_ARCH = "caffe_resnet50"
ARCHITECTURES = (TORCHVISION_ARCH, CAFFE_ARCH)
BLOCK_TYPES = ("bottleneck", "basic")
BN_EPS = 1e-5


def block_names(blocks: Sequence[int]) -> list[list[str]]:
  """Per stage (res2 .. res5), its blocks' names: res2a, res2b, ..."""
  return [[f"res{s + 2}{string.ascii_lowercase[b]}" for b in range(count)]
          for s, count in enumerate(blocks)]


def tap_names(blocks: Sequence[int] = (3, 4, 6, 3)) -> tuple[str, ...]:
  names = ["conv1"]
  for s, stage in enumerate(block_names(blocks)):
    names += stage + [f"res{s + 2}"]
  return tuple(names) + ("pool5", "fc1000", "prob")


# What an inverter's `layer` names mean for a ResNet: conv{i} is the output
# of stage i (conv1 after its pool), fc6 the pooled features, fc8 the class
# scores. There is no fc7.
DEFAULT_TAPS = {"conv1": "conv1", "conv2": "res2", "conv3": "res3",
                "conv4": "res4", "conv5": "res5", "fc6": "pool5",
                "fc8": "fc1000", "prob": "prob"}


class ResNet(nn.Module):
  """`__call__` returns {tap name: activation} up to `until`."""

  arch: str = TORCHVISION_ARCH
  input_size: int = 224
  stem_width: int = 64
  widths: Sequence[int] = (64, 128, 256, 512)
  blocks: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  num_classes: int = 1000
  dtype: Any = jnp.float32

  @property
  def expansion(self) -> int:
    return 4 if self.block == "bottleneck" else 1

  def _conv(self, name: str, width: int, kernel: int, stride: int,
            bias: bool = False) -> nn.Module:
    return layers.CaffeConv(width, kernel, stride, (kernel - 1) // 2,
                            use_bias=bias, dtype=self.dtype, name=name)

  def _bn(self, h: jax.Array, name: str, train: bool) -> jax.Array:
    return layers.BatchNorm(BN_EPS, dtype=self.dtype, name=name)(
        h, use_batch_stats=train)

  def _block(self, h: jax.Array, name: str, width: int, stride: int,
             project: bool, train: bool) -> jax.Array:
    caffe = self.arch == CAFFE_ARCH
    suffix = name[3:]  # '2a' of 'res2a': Caffe names bn2a_branch2a etc.

    def conv_bn(y, branch, w, kernel, s):
      y = self._conv(f"{name}_branch{branch}", w, kernel, s)(y)
      return self._bn(y, f"bn{suffix}_branch{branch}", train)

    if self.block == "bottleneck":
      first, second = (stride, 1) if caffe else (1, stride)
      y = nn.relu(conv_bn(h, "2a", width, 1, first))
      y = nn.relu(conv_bn(y, "2b", width, 3, second))
      y = conv_bn(y, "2c", width * 4, 1, 1)
    else:
      y = nn.relu(conv_bn(h, "2a", width, 3, stride))
      y = conv_bn(y, "2b", width, 3, 1)
    shortcut = conv_bn(h, "1", width * self.expansion, 1, stride) if (
        project) else h
    return nn.relu(y + shortcut)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               until: str | None = None) -> dict[str, jax.Array]:
    # `train`: batch norm from the batch's statistics (training from
    # scratch), else from the stored ones; there is no dropout.
    if self.arch not in ARCHITECTURES or self.block not in BLOCK_TYPES:
      raise ValueError(f"ResNet arch must be one of {ARCHITECTURES} and"
                       f" block one of {BLOCK_TYPES}; got {self.arch!r},"
                       f" {self.block!r}.")
    if len(self.widths) != len(self.blocks):
      raise ValueError(f"encoder.widths {tuple(self.widths)} and"
                       f" encoder.blocks {tuple(self.blocks)} must both give"
                       " one value per stage.")
    taps = tap_names(self.blocks)
    if until is not None and until not in taps:
      raise ValueError(
          f"Unknown tap {until!r} for encoder.arch={self.arch!r} (config"
          f" field encoder.tap); choose one of {', '.join(taps)}.")
    stages.check_input(self.arch, x, self.input_size)
    caffe = self.arch == CAFFE_ARCH

    def stem(h):
      h = self._conv("conv1", self.stem_width, 7, 2, bias=caffe)(h)
      h = nn.relu(self._bn(h, "bn_conv1", train))
      if caffe:
        return layers.max_pool_ceil(h, 3, 2)
      return pooling.max_pool_floor(h, 3, 2, pad=1)

    stage_list: list[stages.Stage] = [("conv1", stem)]
    width_in = self.stem_width
    for s, (names, width) in enumerate(zip(block_names(self.blocks),
                                           self.widths)):
      for b, name in enumerate(names):
        stride = 2 if b == 0 and s > 0 else 1
        project = b == 0 and (stride != 1
                              or width_in != width * self.expansion)
        stage_list.append((name, lambda h, n=name, w=width, st=stride,
                           p=project: self._block(h, n, w, st, p, train)))
      width_in = width * self.expansion
      stage_list.append((f"res{s + 2}", lambda h: h))
    stage_list += [
        ("pool5", lambda h: jnp.mean(h, axis=(1, 2))),
        ("fc1000", lambda h: nn.Dense(self.num_classes, dtype=self.dtype,
                                      name="fc1000")(h)),
        ("prob", lambda h: nn.softmax(h.astype(jnp.float32))),
    ]
    return stages.run(stage_list, x, until)


def from_config(cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> ResNet:
  """Builds the encoder from the `encoder` config block."""
  return ResNet(
      arch=cfg["arch"],
      input_size=int(cfg["input_size"]),
      stem_width=int(cfg["stem_width"]),
      widths=tuple(int(w) for w in cfg["widths"]),
      blocks=tuple(int(b) for b in cfg["blocks"]),
      block=str(cfg["block"]),
      num_classes=int(cfg["num_classes"]),
      dtype=dtype,
  )
