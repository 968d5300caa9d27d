"""Registry of the encoders an inverter can invert.

One place that knows every architecture: how to build it from the `encoder`
config block, its taps, which tap stands for each invertible `layer`, and
which config fields define it (and so must match stored weights). Callers use
this module, never a network module directly.

  arch                  network                        input
  caffenet, alexnet     Caffe AlexNet (alexnet.py)     227, BGR 0-255 - mean
  torchvision_alexnet   torchvision's single-tower     224, RGB /255, mean/std
                        AlexNet (torchvision_alexnet.py)
  vgg16                 VGG-16, the authors' Caffe     224, BGR 0-255 - mean
                        release (vgg.py)
  torchvision_vgg16     VGG-16, torchvision (vgg.py)   224, RGB /255, mean/std
  googlenet             GoogLeNet, BVLC's Caffe model  224, BGR 0-255 - mean
                        (googlenet.py)
  torchvision_googlenet GoogLeNet, torchvision         224, RGB (x/255-.5)/.5
                        (googlenet.py)
  resnet50              ResNet-50, torchvision         224, RGB /255, mean/std
                        (resnet.py)
  caffe_resnet50        ResNet-50, the authors' Caffe  224, BGR 0-255 - mean
                        release (resnet.py)            image
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from inverter.models import (alexnet, googlenet, resnet, torchvision_alexnet,
                             vgg)

ARCHITECTURES = ("caffenet", "alexnet", torchvision_alexnet.ARCH,
                 vgg.CAFFE_ARCH, vgg.TORCHVISION_ARCH,
                 *googlenet.ARCHITECTURES, *resnet.ARCHITECTURES)

# The layers a user can invert, in depth order (the same names for every
# architecture; `default_tap` says what each means).
LAYERS = alexnet.LAYERS
FC_LAYERS = alexnet.FC_LAYERS

# Config fields that define each network (and so must match stored weights);
# `preprocessing` is part of it: the same kernels fed differently are another
# encoder.
_ALEXNET_FIELDS = ("arch", "input_size", "conv1_kernel", "conv1_stride",
                   "conv1_padding", "widths", "fc_width", "num_classes")
ARCHITECTURE_FIELDS = {
    "caffenet": _ALEXNET_FIELDS + ("groups", "lrn", "preprocessing"),
    "alexnet": _ALEXNET_FIELDS + ("groups", "lrn", "preprocessing"),
    torchvision_alexnet.ARCH: _ALEXNET_FIELDS + ("avgpool_size",
                                                 "preprocessing"),
    vgg.CAFFE_ARCH: ("arch", "input_size", "widths", "fc_width", "num_classes",
                     "batch_norm", "conv1_stride", "preprocessing"),
    vgg.TORCHVISION_ARCH: ("arch", "input_size", "widths", "fc_width",
                           "num_classes", "avgpool_size", "batch_norm",
                           "conv1_stride", "preprocessing"),
    **{arch: ("arch", "input_size", "stem_width", "widths", "blocks", "block",
              "num_classes", "preprocessing")
       for arch in resnet.ARCHITECTURES},
    **{arch: ("arch", "input_size", "stem_widths", "inception_widths",
              "num_classes", "preprocessing")
       for arch in googlenet.ARCHITECTURES},
}


def family(arch: str) -> str:
  """'alexnet', 'vgg16', 'googlenet' or 'resnet': which set of layers (and
  parameters) `arch` has."""
  check_arch(arch)
  if arch in resnet.ARCHITECTURES:
    return "resnet"
  if arch in googlenet.ARCHITECTURES:
    return "googlenet"
  return "vgg16" if arch in vgg.ARCHITECTURES else "alexnet"


# Per arch, what a defining field means when stored weights predate it
# (VGG's batch_norm and conv1_stride came with the reduced networks of
# docs/results/architectures; weights ported before have neither).
FIELD_DEFAULTS = {arch: {"batch_norm": False, "conv1_stride": 1}
                  for arch in vgg.ARCHITECTURES}


def with_field_defaults(fields: Mapping[str, Any]) -> dict[str, Any]:
  """`fields` (an encoder config block, a stored architecture or a saved
  identity) with the defining fields of its arch that it predates at their
  old defaults (`FIELD_DEFAULTS`), so what was written before them still
  loads and resumes."""
  defaults = FIELD_DEFAULTS.get(str(fields.get("arch", "")), {})
  return {**defaults, **{k: fields[k] for k in fields.keys()}}


def check_arch(arch: str) -> None:
  if arch not in ARCHITECTURES:
    raise ValueError(
        f"Unknown encoder architecture {arch!r} (config field encoder.arch);"
        f" choose one of {', '.join(ARCHITECTURES)}.")


def check_layer(layer: str) -> None:
  alexnet.check_layer(layer)


def layers_of(arch: str) -> tuple[str, ...]:
  """The `LAYERS` that `arch` has, in depth order (ResNets and GoogLeNets go
  from pool5, layer fc6, straight to the class scores: they have no fc7)."""
  check_arch(arch)
  for module in (resnet, googlenet):
    if arch in module.ARCHITECTURES:
      return tuple(l for l in LAYERS if l in module.DEFAULT_TAPS)
  return LAYERS


def tap_names(arch: str, encoder_cfg: Mapping[str, Any] | None = None
              ) -> tuple[str, ...]:
  """All taps of `arch` in the order the forward pass produces them (a
  ResNet's depend on its `blocks`, from `encoder_cfg` if given)."""
  check_arch(arch)
  if arch in alexnet.ARCHITECTURES:
    return alexnet.tap_names(arch)
  if arch == torchvision_alexnet.ARCH:
    return torchvision_alexnet.TAPS
  if arch in resnet.ARCHITECTURES:
    blocks = (encoder_cfg or {}).get("blocks", (3, 4, 6, 3))
    return resnet.tap_names(tuple(int(b) for b in blocks))
  if arch in googlenet.ARCHITECTURES:
    return googlenet.TAPS
  return vgg.TAPS


def check_tap(arch: str, tap: str,
              encoder_cfg: Mapping[str, Any] | None = None) -> None:
  names = tap_names(arch, encoder_cfg)
  if tap not in names:
    raise ValueError(
        f"Unknown tap {tap!r} for encoder.arch={arch!r} (config field"
        f" encoder.tap); choose one of {', '.join(names)}.")


def default_tap(arch: str, layer: str) -> str:
  """The activation that stands for `layer`: the output of its whole block.

  AlexNets: see `alexnet.default_tap` (torchvision's follows bvlc_alexnet:
  conv1/conv2 -> pool1/pool2). VGG-16: conv{i} -> pool{i}; see
  `vgg.DEFAULT_TAPS` for why. ResNets: conv{i} -> stage i's output,
  fc6 -> pool5, fc8 -> fc1000 (`resnet.DEFAULT_TAPS`).
  """
  check_arch(arch)
  check_layer(layer)
  if arch in alexnet.ARCHITECTURES:
    return alexnet.default_tap(arch, layer)
  if arch == torchvision_alexnet.ARCH:
    return torchvision_alexnet.DEFAULT_TAPS[layer]
  for module, classifier in ((resnet, "fc1000"), (googlenet, "logits")):
    if arch in module.ARCHITECTURES:
      if layer not in module.DEFAULT_TAPS:
        raise ValueError(
            f"encoder.arch={arch!r} has no {layer}: it goes from pool5"
            f" (layer fc6) straight to {classifier} (layer fc8). Invert one"
            " of those, or name any tap with --config.encoder.tap.")
      return module.DEFAULT_TAPS[layer]
  return vgg.DEFAULT_TAPS[layer]


def class_tail(arch: str) -> tuple[str, ...]:
  """The taps from the first fully connected input to the softmax, in
  order: each `relu*` is a ReLU, `prob` the softmax, any other name after
  the first a dense layer of that parameter name (so the class scores of
  features at any of these taps follow from the params alone)."""
  family_ = family(arch)
  if family_ == "resnet":
    return ("pool5", "fc1000", "prob")
  if family_ == "googlenet":
    return ("pool5", "logits", "prob")
  return ("fc6", "relu6", "fc7", "relu7", "fc8", "prob")


def from_config(encoder_cfg: Mapping[str, Any],
                dtype: Any = jnp.float32) -> nn.Module:
  """Builds the encoder the `encoder` config block describes."""
  arch = encoder_cfg["arch"]
  check_arch(arch)
  if arch in alexnet.ARCHITECTURES:
    return alexnet.from_config(encoder_cfg, dtype)
  if arch == torchvision_alexnet.ARCH:
    return torchvision_alexnet.from_config(encoder_cfg, dtype)
  if arch in resnet.ARCHITECTURES:
    return resnet.from_config(encoder_cfg, dtype)
  if arch in googlenet.ARCHITECTURES:
    return googlenet.from_config(encoder_cfg, dtype)
  return vgg.from_config(encoder_cfg, dtype)


def tap_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
  """Per-example shape of every tap, computed without running the network."""
  x = jax.ShapeDtypeStruct((1, model.input_size, model.input_size, 3),
                           jnp.float32)
  out = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x)[0], x)
  return {name: tuple(v.shape[1:]) for name, v in out.items()}
