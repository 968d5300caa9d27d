r"""Inverts AlexNet's fc8 features back into images.

The paper's setup (caffenet on ImageNet at 227x227, ported weights):
  python -m inverter.main --config=configs/fc8.py --workdir=/tmp/fc8

Offline demo on a CPU in minutes (reduced, randomly initialised encoder):
  python -m inverter.main --config=configs/fc8.py:demo --workdir=/tmp/demo_fc8

See inverter/presets.py for the presets and every field.
"""

from inverter import presets


def get_config(arg=None):
  return presets.get_config("fc8", arg)
