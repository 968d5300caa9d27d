r"""Inverts AlexNet's fc7 features back into images.

The paper's setup (caffenet on ImageNet at 227x227, ported weights):
  python -m inverter.main --config=configs/fc7.py --workdir=/tmp/fc7

Offline demo on a CPU in minutes (reduced, randomly initialised encoder):
  python -m inverter.main --config=configs/fc7.py:demo --workdir=/tmp/demo_fc7

See inverter/presets.py for the presets and every field.
"""

from inverter import presets


def get_config(arg=None):
  return presets.get_config("fc7", arg)
