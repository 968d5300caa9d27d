"""torchvision's AlexNet variant, returning every intermediate activation.

torchvision.models.alexnet is the "one weird trick" single-tower AlexNet:
conv1 64 11x11/4 pad 2, conv2 192 5x5 pad 2, conv3 384, conv4 256, conv5 256
(3x3 pad 1), no groups and no LRN, 3x3/2 max-pooling rounded down, then an
adaptive average pool to 6x6 before fc6 (so any input size reaches fc6 with
the same shape). Tap names follow our Caffe AlexNet where the layer exists.

Inputs are NHWC in the network's own preprocessing (RGB, x/255 normalised by
the ImageNet mean/std); `preprocessing.encoder_input_fn` produces that from
the pipeline's Caffe-space images.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inverter.models import layers, pooling, stages

ARCH = "torchvision_alexnet"

TAPS = ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3",
        "relu3", "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6",
        "fc7", "relu7", "fc8", "prob")

# The block output standing for each invertible layer (as for bvlc_alexnet,
# whose blocks also end in pooling).
DEFAULT_TAPS = {"conv1": "pool1", "conv2": "pool2", "conv3": "relu3",
                "conv4": "relu4", "conv5": "pool5", "fc6": "relu6",
                "fc7": "relu7", "fc8": "fc8", "prob": "prob"}


class TorchvisionAlexNet(nn.Module):
  """`__call__` returns {tap name: activation}.

  Parameters are named conv1..conv5 and fc6..fc8, each {kernel, bias}, with
  HWIO conv kernels and fc6 reading the adaptive-pooled map flattened in
  H, W, C order (torchvision flattens C, H, W; the porter reorders).
  """

  input_size: int = 224
  conv1_kernel: int = 11
  conv1_stride: int = 4
  conv1_padding: int = 2
  widths: Sequence[int] = (64, 192, 384, 256, 256)
  fc_width: int = 4096
  num_classes: int = 1000
  avgpool_size: int = 6
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @property
  def arch(self) -> str:
    return ARCH

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               until: str | None = None) -> dict[str, jax.Array]:
    """Runs the network up to tap `until` (all taps if None)."""
    if until is not None and until not in TAPS:
      raise ValueError(
          f"Unknown tap {until!r} for encoder.arch={ARCH!r} (config field"
          f" encoder.tap); choose one of {', '.join(TAPS)}.")
    stages.check_input(ARCH, x, self.input_size)
    conv = lambda name, features, kernel, stride=1, pad=1: layers.CaffeConv(
        features, kernel, stride, pad, dtype=self.dtype, name=name)
    pool = lambda h: pooling.max_pool_floor(h, 3, 2)
    dense = lambda name, width: nn.Dense(width, dtype=self.dtype, name=name)
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    w1, w2, w3, w4, w5 = self.widths

    def fc6(h):
      h = pooling.adaptive_avg_pool(h, self.avgpool_size)
      return dense("fc6", self.fc_width)(dropout(h.reshape(h.shape[0], -1)))

    stage_list = [
        ("conv1", conv("conv1", w1, self.conv1_kernel, self.conv1_stride,
                       self.conv1_padding)),
        ("relu1", nn.relu),
        ("pool1", pool),
        ("conv2", conv("conv2", w2, 5, 1, 2)),
        ("relu2", nn.relu),
        ("pool2", pool),
        ("conv3", conv("conv3", w3, 3)),
        ("relu3", nn.relu),
        ("conv4", conv("conv4", w4, 3)),
        ("relu4", nn.relu),
        ("conv5", conv("conv5", w5, 3)),
        ("relu5", nn.relu),
        ("pool5", pool),
        ("fc6", fc6),
        ("relu6", nn.relu),
        ("fc7", lambda h: dense("fc7", self.fc_width)(dropout(h))),
        ("relu7", nn.relu),
        ("fc8", lambda h: dense("fc8", self.num_classes)(h)),
        ("prob", lambda h: nn.softmax(h.astype(jnp.float32))),
    ]
    return stages.run(stage_list, x, until)


def from_config(cfg: Mapping[str, Any],
                dtype: Any = jnp.float32) -> TorchvisionAlexNet:
  """Builds the encoder from the `encoder` config block."""
  return TorchvisionAlexNet(
      input_size=int(cfg["input_size"]),
      conv1_kernel=int(cfg["conv1_kernel"]),
      conv1_stride=int(cfg["conv1_stride"]),
      conv1_padding=int(cfg["conv1_padding"]),
      widths=tuple(int(w) for w in cfg["widths"]),
      fc_width=int(cfg["fc_width"]),
      num_classes=int(cfg["num_classes"]),
      avgpool_size=int(cfg["avgpool_size"]),
      dtype=dtype,
  )
