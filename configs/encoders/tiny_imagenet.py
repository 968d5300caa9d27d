r"""Trains a reduced encoder on Tiny ImageNet on a CPU (AlexNet-shaped by
default; `arch=` picks another family).

Tiny ImageNet: 200 ImageNet classes at 64x64 (train 300 images per class in
the prepared copy, validation 50 per class). The default encoder has
caffenet's eight layers (conv -> relu -> pool -> LRN in the first two
blocks, groups=2 on conv2/4/5, three fully connected layers with dropout
0.5) at widths 32-64-96-96-64 and fc 512, with conv1 5x5 stride 2 pad 2 so
that pool5 is 4x4 as for CIFAR-10. The recipe is the CIFAR-10 encoder's
(random crops of the 4-pixel zero-padded image plus mirroring; Adam lr
1e-3, 100 warmup steps, cosine decay to 0; weight decay 5e-4; batch 128),
for 40 epochs.

  python -m inverter.main --config=configs/encoders/tiny_imagenet.py \
      --workdir=/tmp/tiny_imagenet_encoder \
      --config.data.data_dir=../shared/data/tfds

reads TFDS `tiny_imagenet` from data_dir (build it once from the official
zip with `python -m inverter.prepare tiny_imagenet`, see docs/data.md). The
exported WORKDIR/encoder/ is what `configs/<layer>.py:tiny_imagenet,
encoder=WORKDIR/encoder` inverts; docs/results/tiny_imagenet/encoder/ is the
one trained for the published results.

Other families (`arch=vgg16`, `resnet50`, `torchvision_googlenet`; their
reduced networks are in `inverter.presets._SMALL_ENCODERS`, their taps in
docs/networks.md) get the same recipe with fewer epochs (`EPOCHS`): they
are slower per image (VGG's first layers run at a higher resolution, batch
norm costs memory passes), and the issue that compares them gives each
about the AlexNet-shaped encoder's budget of two hours on 2 CPU cores.

Config argument (comma-separated): `arch=`, `source=NAME_OR_folder:PATH`,
and `test` for a tiny fast preset used by the test suite.
"""

from inverter import classify_configs, presets

TRAIN_IMAGES = 60_000
BATCH = 128
# Epochs per family (caffenet's published encoder: 40 epochs, 148 min).
# The others' are provisional, set from their speed relative to caffenet's
# in 150-step runs beside another experiment (caffenet 330 images/s, VGG
# 100, ResNet 145, GoogLeNet 215), which puts them at about 2-2.5 hours;
# their first full runs confirm or change them.
EPOCHS = {"caffenet": 40, "vgg16": 15, "resnet50": 20,
          "torchvision_googlenet": 30}
# Evaluations per run (every 4 epochs for caffenet).
EVALUATIONS = 10


def get_config(arg=None):
  arch = str(presets.parse_arg(arg).get("arch", "caffenet"))
  presets.check_small_encoder_arch(arch)
  steps = EPOCHS[arch] * TRAIN_IMAGES // BATCH
  return classify_configs.small_dataset_config(
      "tiny_imagenet", arg, num_train_steps=steps,
      eval_every_steps=steps // EVALUATIONS)
