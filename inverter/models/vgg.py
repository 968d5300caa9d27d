"""VGG-16 (configuration D of Simonyan & Zisserman), returning every tap.

Two published layouts of the same network:
  * `vgg16`: the authors' Caffe release (VGG_ILSVRC_16_layers.caffemodel):
    BGR 0-255 minus the mean, Caffe's ceil-rounded 2x2/2 max-pooling, fc6
    reading pool5 directly (7x7x512 at 224);
  * `torchvision_vgg16` (vgg16-397923af.pth): RGB x/255 normalised by the
    ImageNet mean/std, floor-rounded pooling and an adaptive average pool to
    7x7 before fc6, so any input size reaches fc6 with the same shape.
At the 224x224 input both pool the same (every map size is even) and the
adaptive pool is the identity.

Five blocks of 3x3 pad-1 convolutions (2, 2, 3, 3, 3 of them) each followed
by ReLU, each block ending in 2x2/2 max-pooling; then fc6, fc7 (ReLU, dropout)
and fc8. Taps are Caffe's blob names: conv1_1, relu1_1, ..., pool5, fc6,
relu6, fc7, relu7, fc8, prob.

Two options for VGG-shaped networks trained from scratch on small images
(docs/results/architectures); the pretrained releases use neither:
  * `batch_norm=True` puts batch norm between every convolution and its
    ReLU (the layout of torchvision's vgg16_bn): without it a
    13-convolution plain network learns too slowly for a CPU budget. Tap
    conv{b}_{i} is then the normalised convolution.
  * `conv1_stride=2` runs conv1_1 at stride 2, so that a 64x64 image meets
    every later layer at the sizes a 32x32 one does at stride 1 (as the
    reduced AlexNet-shaped network's conv1 does on Tiny ImageNet).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inverter.models import layers, pooling, stages

CAFFE_ARCH = "vgg16"
TORCHVISION_ARCH = "torchvision_vgg16"
ARCHITECTURES = (CAFFE_ARCH, TORCHVISION_ARCH)

BLOCK_DEPTHS = (2, 2, 3, 3, 3)
# torchvision's BatchNorm2d default, as in vgg16_bn.
BN_EPS = 1e-5

# Convolution (= parameter) names in network order: conv1_1 ... conv5_3.
CONV_NAMES = tuple(f"conv{b + 1}_{i + 1}"
                   for b, depth in enumerate(BLOCK_DEPTHS)
                   for i in range(depth))


def _tap_names() -> tuple[str, ...]:
  names = []
  for b, depth in enumerate(BLOCK_DEPTHS):
    for i in range(depth):
      names += [f"conv{b + 1}_{i + 1}", f"relu{b + 1}_{i + 1}"]
    names.append(f"pool{b + 1}")
  return tuple(names) + ("fc6", "relu6", "fc7", "relu7", "fc8", "prob")


TAPS = _tap_names()

# What the inverter's `layer` names mean for VGG: conv{i} is the output of
# block i, i.e. pool{i} (as conv5 -> pool5 for AlexNet). At 224 these are
# 112, 56, 28, 14 and 7 pixels wide, so every map decoder doubles exactly up
# to the 224 input; the last ReLU of a block (relu{i}_3) is one
# `encoder.tap=` away.
DEFAULT_TAPS = {"conv1": "pool1", "conv2": "pool2", "conv3": "pool3",
                "conv4": "pool4", "conv5": "pool5", "fc6": "relu6",
                "fc7": "relu7", "fc8": "fc8", "prob": "prob"}


class VGG16(nn.Module):
  """`__call__` returns {tap name: activation}.

  Parameters are named conv1_1..conv5_3 and fc6..fc8, each {kernel, bias},
  with HWIO conv kernels and fc6 reading its input (pool5, or the adaptive
  pool of it) flattened in H, W, C order.
  """

  arch: str = CAFFE_ARCH
  input_size: int = 224
  widths: Sequence[int] = (64, 128, 256, 512, 512)
  fc_width: int = 4096
  num_classes: int = 1000
  # torchvision only: the adaptive average pool's output size before fc6.
  avgpool_size: int | None = None
  dropout_rate: float = 0.5
  # Batch norm (parameters bn{b}_{i}) after every convolution.
  batch_norm: bool = False
  # conv1_1's stride (3x3, pad 1: a map of ceil(size / stride)).
  conv1_stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               until: str | None = None) -> dict[str, jax.Array]:
    """Runs the network up to tap `until` (all taps if None)."""
    if self.arch not in ARCHITECTURES:
      raise ValueError(f"VGG16 arch must be one of {ARCHITECTURES},"
                       f" got {self.arch!r}.")
    torchvision = self.arch == TORCHVISION_ARCH
    if torchvision and not self.avgpool_size:
      raise ValueError(f"{TORCHVISION_ARCH} needs encoder.avgpool_size"
                       " (7 for torchvision's VGG-16).")
    if until is not None and until not in TAPS:
      raise ValueError(
          f"Unknown tap {until!r} for encoder.arch={self.arch!r} (config"
          f" field encoder.tap); choose one of {', '.join(TAPS)}.")
    stages.check_input(self.arch, x, self.input_size)
    if len(self.widths) != len(BLOCK_DEPTHS):
      raise ValueError(f"encoder.widths must give 5 block widths, got"
                       f" {tuple(self.widths)}.")
    if torchvision:
      pool = lambda h: pooling.max_pool_floor(h, 2, 2)
    else:
      pool = lambda h: layers.max_pool_ceil(h, 2, 2)
    dense = lambda name, width: nn.Dense(width, dtype=self.dtype, name=name)
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)

    def fc6(h):
      if torchvision:
        h = pooling.adaptive_avg_pool(h, self.avgpool_size)
      return dense("fc6", self.fc_width)(h.reshape(h.shape[0], -1))

    def conv(width, name):
      stride = self.conv1_stride if name == "1_1" else 1
      convolve = layers.CaffeConv(width, 3, stride, 1, dtype=self.dtype,
                                  name=f"conv{name}")
      if not self.batch_norm:
        return convolve
      normalize = layers.BatchNorm(BN_EPS, dtype=self.dtype, name=f"bn{name}")
      return lambda h: normalize(convolve(h), use_batch_stats=train)

    stage_list = []
    for b, (depth, width) in enumerate(zip(BLOCK_DEPTHS, self.widths)):
      for i in range(depth):
        name = f"{b + 1}_{i + 1}"
        stage_list += [(f"conv{name}", conv(width, name)),
                       (f"relu{name}", nn.relu)]
      stage_list.append((f"pool{b + 1}", pool))
    stage_list += [
        ("fc6", fc6),
        ("relu6", nn.relu),
        ("fc7", lambda h: dense("fc7", self.fc_width)(dropout(h))),
        ("relu7", nn.relu),
        ("fc8", lambda h: dense("fc8", self.num_classes)(dropout(h))),
        ("prob", lambda h: nn.softmax(h.astype(jnp.float32))),
    ]
    return stages.run(stage_list, x, until)


def from_config(cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> VGG16:
  """Builds the encoder from the `encoder` config block."""
  avgpool = cfg.get("avgpool_size") if cfg["arch"] == TORCHVISION_ARCH else None
  return VGG16(
      arch=cfg["arch"],
      input_size=int(cfg["input_size"]),
      widths=tuple(int(w) for w in cfg["widths"]),
      fc_width=int(cfg["fc_width"]),
      num_classes=int(cfg["num_classes"]),
      avgpool_size=None if avgpool is None else int(avgpool),
      batch_norm=bool(cfg.get("batch_norm", False)),
      conv1_stride=int(cfg.get("conv1_stride", 1)),
      dtype=dtype,
  )
