r"""Inverts AlexNet's prob features back into images.

The paper's setup (caffenet on ImageNet at 227x227, ported weights):
  python -m inverter.main --config=configs/prob.py --workdir=/tmp/prob

Offline demo on a CPU in minutes (reduced, randomly initialised encoder):
  python -m inverter.main --config=configs/prob.py:demo --workdir=/tmp/demo_prob

See inverter/presets.py for the presets and every field.
"""

from inverter import presets


def get_config(arg=None):
  return presets.get_config("prob", arg)
