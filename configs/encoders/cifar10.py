r"""Trains a reduced AlexNet-shaped encoder on CIFAR-10 on a CPU.

The same eight layers as caffenet (conv -> relu -> pool -> LRN in the first
two blocks, groups=2 on conv2/4/5, three fully connected layers with dropout
0.5) scaled to 32x32 inputs: conv1 5x5 stride 1 pad 2, widths 32-64-96-96-64,
fc 512. Random crops of the 4-pixel zero-padded image plus mirroring; Adam
(lr 1e-3, 100 warmup steps, cosine decay to 0), L2 weight decay 5e-4, batch
128, 5000 steps (~13 epochs). On 2 shared CPU cores (~360 images/s) this took
36 minutes and reached 75.8% top-1 (98.4% top-5) on the 10,000 test images.

  python -m inverter.main --config=configs/encoders/cifar10.py \
      --workdir=/tmp/cifar10_encoder

reads TFDS `cifar10` (prepare it once with `tfds build cifar10`). From JPEG
folders DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg instead:

  python -m inverter.main \
      --config=configs/encoders/cifar10.py:source=folder:DIR \
      --workdir=/tmp/cifar10_encoder

The run logs, and the exported WORKDIR/encoder/metadata.json records, the
flags that make an inverter config use the trained encoder.

Config argument (comma-separated): `source=NAME_OR_folder:PATH`, and `test`
for a tiny fast preset used by the test suite (its encoder block equals the
inverter configs' `test` preset, so `configs/conv1.py:test` takes the exported
weights with only --config.encoder.weights).
"""

from inverter import classify, presets

CIFAR10_MEAN_BGR = presets.CIFAR10_MEAN_BGR


def get_config(arg=None):
  args = presets.parse_arg(arg)
  unknown = sorted(set(args) - {"source", "test"})
  if unknown:
    raise ValueError(f"Unknown config argument(s) {unknown}; known: source,"
                     " test.")
  c = classify.base_config("caffenet")
  presets.cifar10_encoder(c.encoder)

  d = c.data
  d.source = "cifar10"
  d.train_split, d.eval_split = "train", "test"
  d.resize_size = d.crop_size = 32
  d.crop_padding = 4
  d.mirror = True
  d.mean = CIFAR10_MEAN_BGR
  d.shuffle_buffer = 50_000

  c.batch_size = 128
  c.eval_batch_size = 400
  c.num_train_steps = 5_000
  o = c.optimizer
  o.name = "adam"
  o.learning_rate = 1e-3
  o.weight_decay = 5e-4
  o.decay_every_steps = 0
  o.schedule = "cosine"
  o.warmup_steps = 100
  c.log_every_steps = 50
  c.eval_every_steps = 1_000
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 2

  if args.get("test"):
    _apply_test(c)
  if "source" in args:
    d.source = str(args["source"])
  return c


def _apply_test(c):
  """Seconds per run: the inverter `test` preset's encoder, tiny batches."""
  c.encoder = presets.get_config("conv1", "test").encoder
  c.data.mean = tuple(c.encoder.preprocessing.mean)
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
