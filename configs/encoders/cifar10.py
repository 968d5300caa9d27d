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

Config argument (comma-separated): `arch=` (another family's reduced
network, see inverter.presets.SMALL_ENCODER_ARCHS; trained for the same
5000 steps), `source=NAME_OR_folder:PATH`, and `test`
for a tiny fast preset used by the test suite (its encoder block equals the
inverter configs' `test` preset, so `configs/conv1.py:test` takes the exported
weights with only --config.encoder.weights).
"""

from inverter import classify_configs


def get_config(arg=None):
  return classify_configs.small_dataset_config("cifar10", arg, num_train_steps=5_000)
