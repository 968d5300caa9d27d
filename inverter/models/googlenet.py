"""GoogLeNet (Inception v1, Szegedy et al., CVPR 2015), returning every tap.

Two published layouts:
  * `googlenet`: BVLC's Caffe model (bvlc_googlenet.caffemodel,
    models/bvlc_googlenet/deploy.prototxt): convolutions with biases and
    ReLUs, LRN (5, 1e-4, 0.75, k 1) after pool1 and after conv2, max-pools
    3x3/2 rounding up (pool4 too), 5x5 convolutions in the third branch,
    BGR 0-255 minus (104, 117, 123);
  * `torchvision_googlenet` (googlenet-1378be20.pth, ported from
    TensorFlow): convolutions without bias followed by batch norm (eps
    1e-3) and ReLU, no LRN, pool4 2x2/2, a 3x3 convolution in the third
    branch where Caffe has 5x5 (a known quirk of that port), and
    `transform_input`, which maps the ImageNet-normalised input back to
    (x / 255 - 0.5) / 0.5: that is this encoder's preprocessing
    (`preprocessing.TORCHVISION_GOOGLENET`), so the module takes it directly.
Both: nine inception modules of four branches (1x1; 1x1 -> 3x3; 1x1 ->
5x5 or 3x3; 3x3/1 max-pool -> 1x1), concatenated in that order; global
average pooling (Caffe's 7x7 pool5 at 224), the classifier, softmax. The
auxiliary classifiers are not part of the forward pass and are not built.

Taps: conv1 (pool1, after its LRN in Caffe), conv2 (pool2), inception_3a,
inception_3b, pool3, inception_4a .. inception_4e, pool4, inception_5a,
inception_5b, pool5 ([N, 1024]), logits, prob. Parameter names follow
Caffe's layers with '_' for '/': conv1, conv2_reduce, conv2,
inception_3a_1x1, inception_3a_3x3_reduce, inception_3a_3x3,
inception_3a_5x5_reduce, inception_3a_5x5, inception_3a_pool_proj, ...,
logits; torchvision's batch norms are <conv>_bn {scale, bias, mean, var}.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inverter.models import layers, stages

CAFFE_ARCH = "googlenet"
TORCHVISION_ARCH = "torchvision_googlenet"
ARCHITECTURES = (CAFFE_ARCH, TORCHVISION_ARCH)

MODULES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
# Per module: 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj widths
# (deploy.prototxt; torchvision's constructor has the same).
INCEPTION_WIDTHS = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
    (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
    (256, 160, 320, 32, 128, 128), (256, 160, 320, 32, 128, 128),
    (384, 192, 384, 48, 128, 128))
STEM_WIDTHS = (64, 64, 192)  # conv1, conv2_reduce, conv2
BRANCHES = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
BN_EPS = 1e-3

TAPS = ("conv1", "conv2", "inception_3a", "inception_3b", "pool3",
        "inception_4a", "inception_4b", "inception_4c", "inception_4d",
        "inception_4e", "pool4", "inception_5a", "inception_5b", "pool5",
        "logits", "prob")

# What an inverter's `layer` names mean: conv1/conv2 the stem's two stages,
# conv3..conv5 the last module of each inception stage, fc6 the pooled
# features, fc8 the class scores. There is no fc7.
DEFAULT_TAPS = {"conv1": "conv1", "conv2": "conv2", "conv3": "inception_3b",
                "conv4": "inception_4e", "conv5": "inception_5b",
                "fc6": "pool5", "fc8": "logits", "prob": "prob"}


def _max_pool_same(x: jax.Array) -> jax.Array:
  """3x3/1 max-pool with 1 pixel of padding that never wins (the inception
  branch; Caffe and PyTorch agree)."""
  return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max,
                           (1, 3, 3, 1), (1, 1, 1, 1),
                           ((0, 0), (1, 1), (1, 1), (0, 0)))


class GoogLeNet(nn.Module):
  """`__call__` returns {tap name: activation} up to `until`."""

  arch: str = CAFFE_ARCH
  input_size: int = 224
  stem_widths: Sequence[int] = STEM_WIDTHS
  inception_widths: Sequence[Sequence[int]] = INCEPTION_WIDTHS
  num_classes: int = 1000
  dropout_rate: float = 0.4
  dtype: Any = jnp.float32

  def _conv(self, h: jax.Array, name: str, width: int, kernel: int,
            stride: int = 1, train: bool = False) -> jax.Array:
    """Caffe: conv (bias) + ReLU; torchvision: conv + batch norm + ReLU."""
    torchvision = self.arch == TORCHVISION_ARCH
    h = layers.CaffeConv(width, kernel, stride, (kernel - 1) // 2,
                         use_bias=not torchvision, dtype=self.dtype,
                         name=name)(h)
    if torchvision:
      h = layers.BatchNorm(BN_EPS, dtype=self.dtype, name=f"{name}_bn")(
          h, use_batch_stats=train)
    return nn.relu(h)

  def _inception(self, h: jax.Array, module: str, widths: Sequence[int],
                 train: bool) -> jax.Array:
    w1, w3r, w3, w5r, w5, wp = widths
    name = f"inception_{module}"
    third = 3 if self.arch == TORCHVISION_ARCH else 5
    conv = lambda y, n, w, k: self._conv(y, n, w, k, train=train)
    return jnp.concatenate([
        conv(h, f"{name}_1x1", w1, 1),
        conv(conv(h, f"{name}_3x3_reduce", w3r, 1), f"{name}_3x3", w3, 3),
        conv(conv(h, f"{name}_5x5_reduce", w5r, 1), f"{name}_5x5", w5,
             third),
        conv(_max_pool_same(h), f"{name}_pool_proj", wp, 1),
    ], axis=-1)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               until: str | None = None) -> dict[str, jax.Array]:
    if self.arch not in ARCHITECTURES:
      raise ValueError(f"GoogLeNet arch must be one of {ARCHITECTURES}, got"
                       f" {self.arch!r}.")
    if len(self.inception_widths) != len(MODULES) or any(
        len(w) != len(BRANCHES) for w in self.inception_widths):
      raise ValueError("encoder.inception_widths must give 9 modules of 6"
                       f" widths ({', '.join(BRANCHES)}).")
    if until is not None and until not in TAPS:
      raise ValueError(
          f"Unknown tap {until!r} for encoder.arch={self.arch!r} (config"
          f" field encoder.tap); choose one of {', '.join(TAPS)}.")
    stages.check_input(self.arch, x, self.input_size)
    caffe = self.arch == CAFFE_ARCH
    lrn = (lambda h: layers.local_response_norm(h, **LRN)) if caffe else (
        lambda h: h)
    pool = lambda h: layers.max_pool_ceil(h, 3, 2)
    w1, w2r, w2 = self.stem_widths
    widths = dict(zip(MODULES, self.inception_widths))
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)

    # `train`: torchvision's batch norms use the batch's statistics.
    conv = lambda h, n, w, k, s=1: self._conv(h, n, w, k, s, train=train)

    def conv2(h):
      return pool(lrn(conv(conv(h, "conv2_reduce", w2r, 1), "conv2", w2, 3)))

    stage_list: list[stages.Stage] = [
        ("conv1", lambda h: lrn(pool(conv(h, "conv1", w1, 7, 2)))),
        ("conv2", conv2)]
    for module in MODULES:
      stage_list.append((f"inception_{module}", lambda h, m=module:
                         self._inception(h, m, widths[m], train)))
      if module == "3b":
        stage_list.append(("pool3", pool))
      elif module == "4e":
        stage_list.append(("pool4", pool if caffe else (
            lambda h: layers.max_pool_ceil(h, 2, 2))))
    stage_list += [
        ("pool5", lambda h: jnp.mean(h, axis=(1, 2))),
        ("logits", lambda h: nn.Dense(self.num_classes, dtype=self.dtype,
                                      name="logits")(dropout(h))),
        ("prob", lambda h: nn.softmax(h.astype(jnp.float32))),
    ]
    return stages.run(stage_list, x, until)


def from_config(cfg: Mapping[str, Any], dtype: Any = jnp.float32
                ) -> GoogLeNet:
  """Builds the encoder from the `encoder` config block."""
  return GoogLeNet(
      arch=cfg["arch"],
      input_size=int(cfg["input_size"]),
      stem_widths=tuple(int(w) for w in cfg["stem_widths"]),
      inception_widths=tuple(tuple(int(w) for w in module)
                             for module in cfg["inception_widths"]),
      num_classes=int(cfg["num_classes"]),
      dropout_rate=0.4 if cfg["arch"] == CAFFE_ARCH else 0.2,
      dtype=dtype,
  )
