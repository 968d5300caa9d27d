"""The configuration of encoder training (`task='classify'`), as presets.py
is that of inverters: `base_config(arch)` holds every field with Caffe-like
defaults, `small_dataset_config(dataset, arg, ...)` the CPU recipe of the
small data sets. configs/encoders/*.py start from these.
"""

from __future__ import annotations

import ml_collections

from inverter import encoder_weights, presets
from inverter.models import preprocessing

TASK = "classify"


def base_config(arch: str = "caffenet") -> ml_collections.ConfigDict:
  """Every field of an encoder-training config, with Caffe-like defaults.

  configs/encoders/*.py start from this and set the recipe. The `data` block
  is the inverter's (so encoders are trained on images prepared exactly as
  the inverter prepares them) plus `crop_padding`.
  """
  c = ml_collections.ConfigDict()
  c.task = TASK
  c.seed = 0
  c.encoder = presets.encoder_config(arch)
  # Trained from scratch: the initial params come from encoder.init_seed.
  c.encoder.weights = encoder_weights.RANDOM
  c.data = presets.get_config("fc8", f"arch={arch}").data
  c.data.eval_num_images = -1  # Accuracy over the whole eval split.
  # Train-time zero (= mean colour) padding before the random crop.
  c.data.crop_padding = 0
  c.batch_size = 256
  c.eval_batch_size = 256
  c.num_train_steps = 450_000
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd",  # 'sgd' (with momentum) or 'adam'.
      learning_rate=0.01,
      momentum=0.9,
      nesterov=False,
      b1=0.9,
      b2=0.999,
      # L2 on the kernels (not biases), added to the gradient as Caffe does.
      weight_decay=5e-4,
      # Caffe's 'step' policy: lr * decay_factor ** (step // decay_every_steps)
      # when decay_every_steps > 0; otherwise `schedule` as in the inverter
      # ('step' at fractions decay_at, 'cosine', 'constant').
      decay_every_steps=100_000,
      decay_factor=0.1,
      schedule="step",
      decay_at=(),
      warmup_steps=0,
  ))
  # Caffe-space inputs are on the 0-255 scale (pixel std ~64), but He
  # initialisation and the learning rate assume unit-variance inputs: with
  # them as they are, the initial logits saturate the softmax and the ReLUs
  # die within a few steps. The first layer is therefore trained as W = s * V
  # with V initialised and updated like every other layer, s = input_scale:
  # W starts at s times the He kernel and its updates are scaled by s**2
  # (SGD) or s (Adam), which is exactly SGD/Adam on V. 1.0 turns this off
  # (the default for encoders that normalise their input themselves).
  c.input_scale = (1 / 64 if preprocessing.is_caffe_space(
      c.encoder.preprocessing) else 1.0)
  c.compute_dtype = "float32"
  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.checkpoint_every_steps = 5_000
  c.keep_checkpoints = 3
  return c


def small_dataset_config(dataset: str, arg: str | None, *,
                         num_train_steps: int,
                         eval_every_steps: int = 1_000
                         ) -> ml_collections.ConfigDict:
  """The recipe that trains `presets.small_encoder` on a small data set
  (configs/encoders/cifar10.py, tiny_imagenet.py) on a CPU: random crops of
  the 4-pixel zero-padded image plus mirroring, Adam (lr 1e-3, 100 warmup
  steps, cosine decay to 0), L2 weight decay 5e-4, batch 128, accuracy on
  the whole evaluation split.

  `arg` is the config argument, comma-separated: `arch=` (the family of
  the reduced network, `presets.SMALL_ENCODER_ARCHS`; default caffenet),
  `source=NAME_OR_folder:PATH` and `test` (a tiny fast preset for the test
  suite).
  """
  args = presets.parse_arg(arg)
  unknown = sorted(set(args) - {"arch", "source", "test"})
  if unknown:
    raise ValueError(f"Unknown config argument(s) {unknown}; known: arch,"
                     " source, test.")
  arch = str(args.get("arch", "caffenet"))
  presets.check_small_encoder_arch(arch)
  c = base_config(arch)
  presets.small_encoder(c.encoder, dataset)
  presets.small_dataset_data(c.data, dataset)
  c.data.crop_padding = 4
  c.data.shuffle_buffer = 50_000
  c.batch_size = 128
  c.eval_batch_size = 400
  o = c.optimizer
  o.name = "adam"
  o.learning_rate = 1e-3
  o.weight_decay = 5e-4
  o.decay_every_steps = 0
  o.schedule = "cosine"
  o.warmup_steps = 100
  c.num_train_steps = num_train_steps
  c.log_every_steps = 50
  c.eval_every_steps = eval_every_steps
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 2
  if args.get("test"):
    _small_dataset_test_preset(c, arch)
  if "source" in args:
    c.data.source = str(args["source"])
  return c


def _small_dataset_test_preset(c: ml_collections.ConfigDict,
                               arch: str) -> None:
  """Seconds per run: the inverter `test` preset's encoder, tiny batches (its
  encoder block equals the inverter configs' `test,arch=ARCH` preset, so
  `configs/conv1.py:test,arch=ARCH` takes the exported weights)."""
  inverter_test = presets.get_config("conv1", f"test,arch={arch}")
  c.encoder = inverter_test.encoder
  c.data.mean = tuple(inverter_test.data.mean)
  c.data.crop_padding = 2
  c.data.shuffle_buffer = 64
  c.batch_size = 16
  c.eval_batch_size = 16
  c.num_train_steps = 6
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = "constant"
  c.log_every_steps = 2
  c.eval_every_steps = 4
  c.checkpoint_every_steps = 3
