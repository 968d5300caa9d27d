"""The configuration every inverter config file shares.

`configs/<layer>.py` files call `get_config(layer, arg)`. `arg` is the text
after the colon in `--config=configs/fc6.py:ARG`: comma-separated presets and
key=value overrides, e.g. `demo`, `demo,arch=alexnet`, `arch=alexnet`.
`arch=` picks the encoder (see inverter/models/encoders.py): caffenet
(default), alexnet, torchvision_alexnet, vgg16 (Caffe release),
torchvision_vgg16, googlenet (BVLC Caffe release), torchvision_googlenet,
resnet50 (torchvision) or caffe_resnet50 (the authors' Caffe release); crop size
and data mean follow it (227 for the Caffe AlexNets, 224 for the others).

Presets:
  (none)  the paper's setup: caffenet on ImageNet (TFDS imagenet2012) at
          227x227, ported pretrained weights required, batch 64, Adam 1e-4.
  demo    offline on 2 CPU cores in minutes: a reduced AlexNet-shaped encoder,
          randomly initialised (stated in logs and outputs), 64x64 crops of
          the photographs shipped with scikit-image.
  test    a tiny model for the test suite (seconds per run).
  cifar10, tiny_imagenet
          CPU-sized reproductions (docs/results/): the small encoder that
          configs/encoders/<data set>.py trains, on that data set at its own
          size (32x32, 64x64); `encoder=DIR` points at the trained encoder.
"""

from __future__ import annotations

import json
import os

import ml_collections
from etils import epath

from inverter.models import encoders, googlenet, preprocessing

IMAGENET_TRAIN_IMAGES = 1_281_167

# The paper trained shallow inverters for about 15 epochs and deep ones for
# up to 60; these are the epochs per layer the default configs use.
_EPOCHS = {"conv1": 15, "conv2": 15, "conv3": 30, "conv4": 30, "conv5": 30,
           "fc6": 60, "fc7": 60, "fc8": 60, "prob": 60}

DEFAULT_WEIGHTS_DIR = os.path.join("~", ".cache", "inverter", "encoders")


def parse_arg(arg: str | None) -> dict[str, object]:
  """'demo,arch=alexnet' -> {'demo': True, 'arch': 'alexnet'}."""
  out: dict[str, object] = {}
  for token in (arg or "").split(","):
    token = token.strip()
    if not token:
      continue
    key, sep, value = token.partition("=")
    out[key.strip()] = value.strip() if sep else True
  return out


def encoder_config(arch: str = "caffenet") -> ml_collections.ConfigDict:
  """The `encoder` config block of the full-size pretrained network `arch`.

  Inverter configs, the porting tool and encoder training all start from it.
  Each architecture has its own defining fields (see
  `encoders.ARCHITECTURE_FIELDS`) plus `preprocessing`: what the network was
  trained on (see inverter/models/preprocessing.py).
  """
  encoders.check_arch(arch)
  if arch in ("caffenet", "alexnet"):
    net = dict(input_size=227, conv1_kernel=11, conv1_stride=4,
               conv1_padding=0, widths=(96, 256, 384, 384, 256),
               fc_width=4096, num_classes=1000, groups=2, group_impl="auto",
               lrn=dict(size=5, alpha=1e-4, beta=0.75, k=1.0),
               preprocessing=preprocessing.CAFFE_ALEXNET)
  elif arch == "torchvision_alexnet":
    net = dict(input_size=224, conv1_kernel=11, conv1_stride=4,
               conv1_padding=2, widths=(64, 192, 384, 256, 256),
               fc_width=4096, num_classes=1000, avgpool_size=6,
               preprocessing=preprocessing.TORCHVISION)
  elif arch == "vgg16":
    net = dict(input_size=224, widths=(64, 128, 256, 512, 512),
               fc_width=4096, num_classes=1000, batch_norm=False,
               conv1_stride=1, preprocessing=preprocessing.CAFFE_VGG)
  elif arch == "torchvision_vgg16":
    net = dict(input_size=224, widths=(64, 128, 256, 512, 512),
               fc_width=4096, num_classes=1000, avgpool_size=7,
               batch_norm=False, conv1_stride=1,
               preprocessing=preprocessing.TORCHVISION)
  elif arch in ("googlenet", "torchvision_googlenet"):
    net = dict(input_size=224, stem_widths=googlenet.STEM_WIDTHS,
               inception_widths=googlenet.INCEPTION_WIDTHS, num_classes=1000,
               preprocessing=(preprocessing.CAFFE_ALEXNET
                              if arch == "googlenet"
                              else preprocessing.TORCHVISION_GOOGLENET))
  else:  # resnet50, caffe_resnet50
    net = dict(input_size=224, stem_width=64, widths=(64, 128, 256, 512),
               blocks=(3, 4, 6, 3), block="bottleneck", num_classes=1000,
               preprocessing=(preprocessing.TORCHVISION if arch == "resnet50"
                              else preprocessing.CAFFE_RESNET))
  return ml_collections.ConfigDict(dict(
      arch=arch,
      **net,
      # Path to encoder weights (see docs/encoders.md), or 'random'.
      weights=os.path.join(DEFAULT_WEIGHTS_DIR, arch),
      init_seed=0,
      # Activation to invert; '' means the layer's default tap.
      tap="",
  ))


# Per-channel mean of the CIFAR-10 training images, BGR on the 0-255 scale.
CIFAR10_MEAN_BGR = (113.87, 122.96, 125.31)
# The same for Tiny ImageNet's training images (the 60,000 of the prepared
# TFDS tiny_imagenet train split: RGB 121.29, 114.28, 100.16).
TINY_IMAGENET_MEAN_BGR = (100.16, 114.28, 121.29)

# The small labelled data sets of the CPU-sized reproductions: TFDS name,
# splits, image size (images are used whole, not warped or cropped for
# evaluation), number of classes, training-set mean, and the training steps
# of their inverters at batch 64 and how often they are evaluated.
# CIFAR-10: 2.6 epochs, about 3 minutes per run on 2 CPU cores. Tiny
# ImageNet: 6.4 epochs, evaluated 10 times so that the last fifth of
# training shows whether the error has flattened.
SMALL_DATASETS = {
    "cifar10": dict(title="CIFAR-10", source="cifar10",
                    train_split="train", eval_split="test", size=32,
                    num_classes=10, mean=CIFAR10_MEAN_BGR,
                    inverter_steps=2000, inverter_eval_every=500),
    "tiny_imagenet": dict(title="Tiny ImageNet", source="tiny_imagenet",
                          train_split="train", eval_split="validation",
                          size=64, num_classes=200,
                          mean=TINY_IMAGENET_MEAN_BGR, inverter_steps=6000,
                          inverter_eval_every=600),
}

_KNOWN_ARGS = ("demo", "test", *SMALL_DATASETS, "arch", "source", "encoder")
_SIZE_PRESETS = ("demo", "test", *SMALL_DATASETS)


# The reduced network of each encoder family that configs/encoders/<data
# set>.py trains from scratch on a small data set (`arch=` picks the family;
# caffenet is the default and the published encoders'). The caffenet entry
# is the encoder of docs/results/; the others answer "do
# the findings hold beyond AlexNet" (docs/results/architectures): a
# VGG-16-shaped network (13 convolutions, batch norm after each), a
# ResNet-18-shaped one (torchvision layout, basic blocks 2-2-2-2, batch
# norm) and an
# Inception-v1-shaped one (torchvision layout: batch norm, no LRN), with
# a quarter of the original widths (VGG's fc 512); configs/encoders/
# tiny_imagenet.py gives each its epochs.
_SMALL_ENCODERS = {
    "caffenet": dict(widths=(32, 64, 96, 96, 64), fc_width=512),
    # Batch norm, as vgg16_bn: without it the plain 13-convolution network
    # reached 16.7% top-1 at 60% of its 20 epochs (AlexNet-shaped: 27.5%).
    # conv1_1 at stride 2 on 64x64 images (small_encoder): at stride 1 its
    # 20 epochs took 3.1 hours here and reached 28.6% top-1.
    "vgg16": dict(widths=(16, 32, 64, 128, 128), fc_width=512,
                  batch_norm=True),
    "resnet50": dict(stem_width=16, widths=(16, 32, 64, 128),
                     blocks=(2, 2, 2, 2), block="basic"),
    # Every GoogLeNet width divided by this.
    "torchvision_googlenet": dict(width_divisor=4),
}
SMALL_ENCODER_ARCHS = tuple(_SMALL_ENCODERS)
# What each reduced network is, for tables and figures (the arch name is
# the family's: `resnet50` here has ResNet-18's shape).
SMALL_ENCODER_TITLES = {
    "caffenet": "AlexNet-shaped (caffenet)",
    "vgg16": "VGG-16-shaped, batch norm (vgg16)",
    "resnet50": "ResNet-18-shaped (resnet50)",
    "torchvision_googlenet": "Inception-v1-shaped (torchvision_googlenet)",
}


class UnknownSmallEncoderError(ValueError):
  """An arch without a reduced network for the small data sets."""


def check_small_encoder_arch(arch: str) -> None:
  if arch not in SMALL_ENCODER_ARCHS:
    raise UnknownSmallEncoderError(
        f"arch={arch} has no reduced network for the small data sets;"
        f" choose one of {', '.join(SMALL_ENCODER_ARCHS)}.")


def small_encoder(e: ml_collections.ConfigDict, dataset: str) -> None:
  """Makes `e` (an encoder block from `encoder_config(arch)`) the reduced
  network of its family that configs/encoders/<dataset>.py trains
  (`_SMALL_ENCODERS`). For caffenet: widths 32-64-96-96-64, fc 512, LRN and
  groups as in caffenet; conv1 5x5 pad 2, stride 1 at 32x32 (CIFAR-10) and
  stride 2 at 64x64 (Tiny ImageNet), so that pool5 is 4x4 in both. VGG's
  conv1_1 likewise (stride 2 at 64x64: every later map has its 32x32
  size)."""
  spec = SMALL_DATASETS[dataset]
  check_small_encoder_arch(e.arch)
  shape = dict(_SMALL_ENCODERS[e.arch])
  e.input_size = spec["size"]
  if e.arch == "caffenet":
    e.conv1_kernel, e.conv1_padding = 5, 2
  if e.arch in ("caffenet", "vgg16"):
    e.conv1_stride = 1 if spec["size"] <= 32 else 2
  if "width_divisor" in shape:
    divisor = shape.pop("width_divisor")
    narrow = lambda widths: tuple(max(2, w // divisor) for w in widths)
    e.stem_widths = narrow(googlenet.STEM_WIDTHS)
    e.inception_widths = tuple(narrow(m) for m in googlenet.INCEPTION_WIDTHS)
  e.update(shape)
  e.num_classes = spec["num_classes"]
  if preprocessing.is_caffe_space(e.preprocessing):
    e.preprocessing.mean = spec["mean"]


def small_dataset_data(d: ml_collections.ConfigDict, dataset: str) -> None:
  """`d` (a config's data block) reads `dataset` at its own size."""
  spec = SMALL_DATASETS[dataset]
  d.source = spec["source"]
  d.train_split, d.eval_split = spec["train_split"], spec["eval_split"]
  d.resize_size = d.crop_size = spec["size"]
  d.mirror = True
  d.mean = spec["mean"]


def get_config(layer: str, arg: str | None = None) -> ml_collections.ConfigDict:
  encoders.check_layer(layer)
  args = parse_arg(arg)
  unknown = sorted(set(args) - set(_KNOWN_ARGS))
  if unknown:
    raise ValueError(f"Unknown config argument(s) {unknown}; known:"
                     f" {', '.join(_KNOWN_ARGS)} (e.g. configs/fc6.py:demo).")
  chosen = [name for name in _SIZE_PRESETS if args.get(name)]
  if len(chosen) > 1:
    raise ValueError(f"Choose at most one of the presets {_SIZE_PRESETS},"
                     f" not {chosen}.")
  arch = str(args.get("arch", "caffenet"))
  encoders.check_arch(arch)

  c = ml_collections.ConfigDict()
  c.layer = layer
  c.seed = 0
  c.preset = chosen[0] if chosen else "paper"

  c.encoder = encoder_config(arch)

  c.decoder = ml_collections.ConfigDict(dict(
      fc_widths=(4096, 4096, 4096),
      start_shape=(4, 4, 256),
      conv_channels=(256, 256, 256),
      # Empty: halve the width at each up-convolution, ending with 3.
      upconv_channels=(),
      kernel_size=5,
      leak=0.2,
      # How up-convolutions run (same results): 'auto', 'xla', 'subpixel'.
      upconv_impl="auto",
  ))

  c.data = ml_collections.ConfigDict(dict(
      source="imagenet2012",
      data_dir=ml_collections.FieldReference(None, field_type=str),
      manual_dir=ml_collections.FieldReference(None, field_type=str),
      train_split="train",
      eval_split="validation",
      resize_size=256,
      crop_size=c.encoder.input_size,
      mirror=True,
      mean=_data_mean(c.encoder.preprocessing),
      mean_file=ml_collections.FieldReference(None, field_type=str),
      shuffle_buffer=10_000,
      num_parallel_calls=-1,
      prefetch=2,
      eval_num_images=10_000,
      builtin_scales=(0.2, 1.0),
  ))

  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_train_steps = _EPOCHS[layer] * IMAGENET_TRAIN_IMAGES // c.batch_size
  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-4,
      b1=0.9,
      b2=0.999,
      # 'step': multiply by decay_factor at each fraction in decay_at;
      # 'cosine': cosine decay to 0 after warmup; 'constant'.
      schedule="step",
      decay_at=(0.6, 0.8, 0.9),
      decay_factor=0.5,
      warmup_steps=0,
  ))
  c.compute_dtype = "float32"  # 'bfloat16' on TPU halves memory and time.
  # What the decoder sees of the features: '' all, 'top5' only the 5 largest
  # (see inverter/feature_transforms.py; configs/fc8_top5.py).
  c.feature_transform = ""
  # Train the encoder together with the decoder (the paper's autoencoder
  # baseline; encoder.weights gives its start, 'random' = from scratch).
  c.train_encoder = False

  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.checkpoint_every_steps = 5_000
  c.keep_checkpoints = 3
  c.num_grid_images = 8

  if c.preset == "demo":
    _apply_demo(c, layer)
  elif c.preset == "test":
    _apply_test(c)
  elif c.preset in SMALL_DATASETS:
    _apply_small_dataset(c, c.preset)
  if "source" in args:
    c.data.source = str(args["source"])
  if "encoder" in args:
    use_encoder_weights(c, str(args["encoder"]))
  return c


def encoder_block(architecture: dict[str, object]
                  ) -> ml_collections.ConfigDict:
  """The `encoder` config block of a stored architecture (an encoder's
  metadata, a run's identity): its defining fields over the family's
  defaults for the rest (lists become tuples, as configs hold them)."""
  encoders.check_arch(str(architecture.get("arch", "")))
  block = encoder_config(str(architecture["arch"]))
  for key, value in architecture.items():
    block[key] = tuple(value) if isinstance(value, list) else value
  return block


def use_encoder_weights(c: ml_collections.ConfigDict, path: str) -> None:
  """Points `c` at the encoder weights in `path` (ported or trained) and takes
  the encoder's architecture, preprocessing and input geometry from its
  metadata, so no encoder field has to be repeated on the command line."""
  meta_path = epath.Path(os.path.expanduser(path)) / "metadata.json"
  try:
    meta = json.loads(meta_path.read_text())
    arch = dict(meta["architecture"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f"encoder={path}: cannot read the encoder's architecture from"
        f" {meta_path} ({e}); give a directory written by"
        " `python -m inverter.port` or by encoder training.") from None
  c.encoder = encoder_block(arch)
  c.encoder.weights = path
  prep = meta.get("preprocessing", {})
  c.data.crop_size = c.encoder.input_size
  c.data.resize_size = int(prep.get("resize_size", max(
      c.data.resize_size, c.encoder.input_size)))
  c.data.mean = _data_mean(c.encoder.preprocessing)


def _data_mean(pre) -> tuple[float, ...]:
  """The pipeline's BGR 0-255 mean: a Caffe encoder's own mean (so its input
  adapter is the identity); for a normalising encoder its mean in that
  space (any value works there, the adapter adds it back)."""
  mean = [round(float(m) / float(pre.scale), 4) for m in pre.mean]
  return tuple(mean[::-1] if pre.channel_order == "RGB" else mean)


# Reduced ResNets of the `demo` and `test` presets: one block per stage.
_REDUCED_RESNETS = {
    64: dict(stem_width=16, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1)),
    32: dict(stem_width=8, widths=(4, 8, 8, 8), blocks=(1, 1, 1, 1)),
}


def _reduced_encoder(c: ml_collections.ConfigDict, input_size: int,
                     widths: tuple[int, ...], fc_width: int) -> None:
  """A narrow, small-input copy of the configured architecture: `widths`
  and `fc_width` for AlexNets and VGG-16, `_REDUCED_RESNETS` for ResNets,
  every width divided for GoogLeNets."""
  c.encoder.input_size = input_size
  family = encoders.family(c.encoder.arch)
  if family == "alexnet":
    c.encoder.conv1_kernel = 5
    c.encoder.conv1_stride = 2 if input_size > 32 else 1
    c.encoder.conv1_padding = 2
  if family == "resnet":
    c.encoder.update(_REDUCED_RESNETS[input_size])
  elif family == "googlenet":
    # Every width divided by 8 (demo, 64x64) or 16 (test, 32x32).
    divisor = 8 if input_size >= 64 else 16
    narrow = lambda widths: tuple(max(2, w // divisor) for w in widths)
    c.encoder.stem_widths = narrow(googlenet.STEM_WIDTHS)
    c.encoder.inception_widths = tuple(
        narrow(m) for m in googlenet.INCEPTION_WIDTHS)
  else:
    c.encoder.widths = widths
    c.encoder.fc_width = fc_width
  c.encoder.num_classes = 100
  c.encoder.weights = "random"
  c.data.resize_size = input_size
  c.data.crop_size = input_size


def _apply_demo(c: ml_collections.ConfigDict, layer: str) -> None:
  _reduced_encoder(c, 64, (48, 128, 192, 192, 128), 1024)
  c.decoder.fc_widths = (1024, 1024, 1024)
  c.decoder.start_shape = (4, 4, 64)
  c.decoder.conv_channels = (128, 128, 128)
  c.data.source = "builtin:skimage"
  c.data.eval_num_images = -1
  c.data.shuffle_buffer = 256
  c.batch_size = 32
  c.eval_batch_size = 16
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 50
  c.num_train_steps = 3000 if layer in encoders.FC_LAYERS else 1200
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 250
  c.num_grid_images = 15


def _apply_small_dataset(c: ml_collections.ConfigDict, dataset: str) -> None:
  """Inverters of a small data set's encoder on that data set at its own size
  (CPU-sized reproductions, docs/results/<dataset>): the encoder of
  configs/encoders/<dataset>.py, randomly initialised unless `encoder=DIR`
  points at the trained one; evaluated on the whole evaluation split."""
  small_encoder(c.encoder, dataset)
  c.encoder.weights = "random"
  c.decoder.fc_widths = (1024, 1024)
  c.decoder.start_shape = (4, 4, 64)
  c.decoder.conv_channels = (128, 128)
  small_dataset_data(c.data, dataset)
  c.data.shuffle_buffer = 50_000
  c.data.eval_num_images = -1
  c.batch_size = 64
  # As in training's other presets: the normalized error compares the
  # images within a batch of 64.
  c.eval_batch_size = 64
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 100
  c.num_train_steps = SMALL_DATASETS[dataset]["inverter_steps"]
  c.log_every_steps = 100
  c.eval_every_steps = SMALL_DATASETS[dataset]["inverter_eval_every"]
  c.checkpoint_every_steps = c.eval_every_steps
  c.num_grid_images = 16


def _apply_test(c: ml_collections.ConfigDict) -> None:
  _reduced_encoder(c, 32, (8, 16, 16, 16, 16), 64)
  c.encoder.num_classes = 10
  c.decoder.fc_widths = (64, 256)
  c.decoder.start_shape = (4, 4, 16)
  c.decoder.conv_channels = (16,)
  c.data.source = "builtin:skimage"
  c.data.eval_num_images = 8
  c.data.shuffle_buffer = 16
  c.batch_size = 8
  c.eval_batch_size = 8
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "constant"
  c.num_train_steps = 4
  c.log_every_steps = 2
  c.eval_every_steps = 4
  c.checkpoint_every_steps = 2
  c.num_grid_images = 4
