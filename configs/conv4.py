r"""Inverts AlexNet's conv4 features back into images.

The paper's setup (caffenet on ImageNet at 227x227, ported weights):
  python -m inverter.main --config=configs/conv4.py --workdir=/tmp/conv4

Offline demo on a CPU in minutes (reduced, randomly initialised encoder):
  python -m inverter.main --config=configs/conv4.py:demo --workdir=/tmp/demo_conv4

See inverter/presets.py for the presets and every field.
"""

from inverter import presets


def get_config(arg=None):
  return presets.get_config("conv4", arg)
