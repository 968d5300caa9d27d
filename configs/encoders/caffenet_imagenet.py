r"""Trains caffenet from scratch on ImageNet: the bvlc_reference_caffenet recipe.

Caffe's recipe (models/bvlc_reference_caffenet/solver.prototxt): SGD with
momentum 0.9, learning rate 0.01 multiplied by 0.1 every 100k iterations,
weight decay 5e-4, batch 256, 450k iterations (~90 epochs), random 227x227
crops of 256x256 warped images with mirroring, dropout 0.5 on fc6/fc7, the
Caffe ImageNet mean. For accelerators (days on one GPU):

  python -m inverter.main --config=configs/encoders/caffenet_imagenet.py \
      --workdir=/tmp/caffenet_imagenet

ImageNet must be prepared for TFDS first (docs/data.md, "Preparing
ImageNet for TFDS"). The exported encoder (WORKDIR/encoder) plugs into every inverter
config with --config.encoder.weights=WORKDIR/encoder.

Config argument: `source=NAME_OR_folder:PATH` to read another labelled
source (ImageFolder layout PATH/<split>/<class>/<image>).
"""

from inverter import classify_configs, presets


def get_config(arg=None):
  args = presets.parse_arg(arg)
  unknown = sorted(set(args) - {"source"})
  if unknown:
    raise ValueError(f"Unknown config argument(s) {unknown}; known: source.")
  c = classify_configs.base_config("caffenet")
  c.data.source = "imagenet2012"
  c.data.eval_split = "validation"
  c.data.resize_size = 256
  c.data.crop_size = 227
  c.data.mirror = True
  c.batch_size = 256
  c.eval_batch_size = 256
  c.num_train_steps = 450_000
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.decay_every_steps = 100_000
  c.optimizer.decay_factor = 0.1
  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.checkpoint_every_steps = 5_000
  if "source" in args:
    c.data.source = str(args["source"])
  return c
