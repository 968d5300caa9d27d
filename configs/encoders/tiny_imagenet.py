r"""Trains the reduced AlexNet-shaped encoder on Tiny ImageNet on a CPU.

Tiny ImageNet: 200 ImageNet classes at 64x64 (train 300 images per class in
the prepared copy, validation 50 per class). The encoder has caffenet's
eight layers (conv -> relu -> pool -> LRN in the first two blocks, groups=2
on conv2/4/5, three fully connected layers with dropout 0.5) at widths
32-64-96-96-64 and fc 512, with conv1 5x5 stride 2 pad 2 so that pool5 is
4x4 as for CIFAR-10. The recipe is the CIFAR-10 encoder's (random crops of
the 4-pixel zero-padded image plus mirroring; Adam lr 1e-3, 100 warmup
steps, cosine decay to 0; weight decay 5e-4; batch 128), for 40 epochs.

  python -m inverter.main --config=configs/encoders/tiny_imagenet.py \
      --workdir=/tmp/tiny_imagenet_encoder \
      --config.data.data_dir=../shared/data/tfds

reads TFDS `tiny_imagenet` from data_dir (build it once from the official
zip with `python -m inverter.prepare tiny_imagenet`, see docs/data.md). The
exported WORKDIR/encoder/ is what `configs/<layer>.py:tiny_imagenet,
encoder=WORKDIR/encoder` inverts; docs/results/tiny_imagenet/encoder/ is the
one trained for the published results.

Config argument (comma-separated): `source=NAME_OR_folder:PATH`, and `test`
for a tiny fast preset used by the test suite.
"""

from inverter import classify_configs

# 40 epochs of the 60,000 training images at batch 128.
EPOCHS = 40
TRAIN_IMAGES = 60_000


def get_config(arg=None):
  return classify_configs.small_dataset_config(
      "tiny_imagenet", arg, num_train_steps=EPOCHS * TRAIN_IMAGES // 128,
      eval_every_steps=1_875)  # every 4 epochs
