"""AlexNet as Caffe defines it, returning every intermediate activation ("tap").

Two published orderings are supported:
  * `caffenet` (bvlc_reference_caffenet, the network the paper inverts):
    conv -> relu -> pool -> norm in the first two blocks;
  * `alexnet` (bvlc_alexnet): conv -> relu -> norm -> pool.
The same module builds reduced AlexNet-shaped encoders (same eight layers,
LRN and groups, smaller input and widths) for CPU runs; fc6's input size then
follows from the convolution geometry.

Inputs are NHWC, BGR, mean-subtracted, 0-255 scale, exactly `input_size` wide.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inverter.models import layers, stages

ARCHITECTURES = ("caffenet", "alexnet")

# Every tap in network order, per architecture.
_BLOCK12 = {
    "caffenet": ("conv{i}", "relu{i}", "pool{i}", "norm{i}"),
    "alexnet": ("conv{i}", "relu{i}", "norm{i}", "pool{i}"),
}
_TAIL = ("conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5",
         "fc6", "relu6", "fc7", "relu7", "fc8", "prob")

# The layers a user can invert, in depth order.
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8",
          "prob")
FC_LAYERS = ("fc6", "fc7", "fc8", "prob")


def tap_names(arch: str) -> tuple[str, ...]:
  """All taps of `arch` in the order the forward pass produces them."""
  check_arch(arch)
  names = []
  for i in (1, 2):
    names += [t.format(i=i) for t in _BLOCK12[arch]]
  return tuple(names) + _TAIL


def default_tap(arch: str, layer: str) -> str:
  """The activation that stands for `layer`: the output of its whole block.

  conv1/conv2 end in norm (caffenet) or pool (alexnet); conv3/conv4 after the
  ReLU; conv5 after pool5; fc6/fc7 after the ReLU; fc8 before the softmax.
  """
  check_arch(arch)
  check_layer(layer)
  if layer in ("conv1", "conv2"):
    return _BLOCK12[arch][-1].format(i=layer[-1])
  return {"conv3": "relu3", "conv4": "relu4", "conv5": "pool5", "fc6": "relu6",
          "fc7": "relu7", "fc8": "fc8", "prob": "prob"}[layer]


def check_arch(arch: str) -> None:
  if arch not in ARCHITECTURES:
    raise ValueError(
        f"Unknown encoder architecture {arch!r} (config field encoder.arch);"
        f" choose one of {', '.join(ARCHITECTURES)}.")


def check_layer(layer: str) -> None:
  if layer not in LAYERS:
    raise ValueError(
        f"Unknown layer {layer!r} (config field `layer`); choose one of"
        f" {', '.join(LAYERS)}.")


def check_tap(arch: str, tap: str) -> None:
  if tap not in tap_names(arch):
    raise ValueError(
        f"Unknown tap {tap!r} for encoder.arch={arch!r} (config field"
        f" encoder.tap); choose one of {', '.join(tap_names(arch))}.")


@dataclasses.dataclass(frozen=True)
class LRNParams:
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 1.0


class AlexNet(nn.Module):
  """Caffe's AlexNet; `__call__` returns {tap name: activation}.

  Parameters are named conv1..conv5 and fc6..fc8, each {kernel, bias}, with
  HWIO conv kernels (grouped layers keep Caffe's per-group input width) and
  fc6 taking the pool5 map flattened in H, W, C order.
  """

  arch: str = "caffenet"
  input_size: int = 227
  conv1_kernel: int = 11
  conv1_stride: int = 4
  conv1_padding: int = 0
  widths: Sequence[int] = (96, 256, 384, 384, 256)
  fc_width: int = 4096
  num_classes: int = 1000
  groups: int = 2
  group_impl: str = "auto"
  lrn: LRNParams = LRNParams()
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               until: str | None = None) -> dict[str, jax.Array]:
    """Runs the network up to tap `until` (all taps if None)."""
    check_arch(self.arch)
    if until is not None:
      check_tap(self.arch, until)
    stages.check_input("AlexNet", x, self.input_size)
    conv = lambda name, features, kernel, stride=1, pad=0, groups=1: (
        layers.CaffeConv(features, kernel, stride, pad, groups,
                         group_impl=self.group_impl, dtype=self.dtype,
                         name=name))
    lrn = lambda v: layers.local_response_norm(v, **dataclasses.asdict(self.lrn))
    pool = layers.max_pool_ceil
    dense = lambda name, width: nn.Dense(width, dtype=self.dtype, name=name)
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    w1, w2, w3, w4, w5 = self.widths

    def norm_and_pool(i):
      ops = {f"norm{i}": lrn, f"pool{i}": pool}
      return [(t.format(i=i), ops[t.format(i=i)]) for t in _BLOCK12[self.arch][2:]]

    stage_list = [
        ("conv1", conv("conv1", w1, self.conv1_kernel, self.conv1_stride,
                       self.conv1_padding)),
        ("relu1", nn.relu),
        *norm_and_pool(1),
        ("conv2", conv("conv2", w2, 5, 1, 2, self.groups)),
        ("relu2", nn.relu),
        *norm_and_pool(2),
        ("conv3", conv("conv3", w3, 3, 1, 1)),
        ("relu3", nn.relu),
        ("conv4", conv("conv4", w4, 3, 1, 1, self.groups)),
        ("relu4", nn.relu),
        ("conv5", conv("conv5", w5, 3, 1, 1, self.groups)),
        ("relu5", nn.relu),
        ("pool5", pool),
        # fc6 reads pool5 flattened in H, W, C order.
        ("fc6", lambda h: dense("fc6", self.fc_width)(h.reshape(h.shape[0], -1))),
        ("relu6", nn.relu),
        ("fc7", lambda h: dense("fc7", self.fc_width)(dropout(h))),
        ("relu7", nn.relu),
        ("fc8", lambda h: dense("fc8", self.num_classes)(dropout(h))),
        ("prob", lambda h: nn.softmax(h.astype(jnp.float32))),
    ]
    return stages.run(stage_list, x, until)


def from_config(cfg: Mapping[str, Any], dtype: Any = jnp.float32) -> AlexNet:
  """Builds the encoder from the `encoder` config block."""
  check_arch(cfg["arch"])
  return AlexNet(
      arch=cfg["arch"],
      input_size=int(cfg["input_size"]),
      conv1_kernel=int(cfg["conv1_kernel"]),
      conv1_stride=int(cfg["conv1_stride"]),
      conv1_padding=int(cfg["conv1_padding"]),
      widths=tuple(int(w) for w in cfg["widths"]),
      fc_width=int(cfg["fc_width"]),
      num_classes=int(cfg["num_classes"]),
      groups=int(cfg["groups"]),
      group_impl=cfg["group_impl"],
      lrn=LRNParams(**dict(cfg["lrn"])),
      dtype=dtype,
  )


def tap_shapes(model: AlexNet) -> dict[str, tuple[int, ...]]:
  """Per-example shape of every tap, computed without running the network."""
  x = jax.ShapeDtypeStruct((1, model.input_size, model.input_size, 3),
                           jnp.float32)
  out = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x)[0], x)
  return {name: tuple(v.shape[1:]) for name, v in out.items()}
