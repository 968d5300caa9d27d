r"""Inverts fc8 from its five largest activations alone.

The decoder sees each image's fc8 vector with all but its top-5 entries set
to 0 (config.feature_transform='top5'), at training and evaluation alike; the
`topk` analysis study compares it with the fc8 inverter trained on all
activations, on the same top-5-only input:

  python -m inverter.main --config=configs/fc8_top5.py --workdir=/tmp/fc8_top5
  python -m inverter.main --config=configs/fc8_top5.py:demo \
      --workdir=/tmp/demo_fc8_top5

Presets as for every layer (see inverter/presets.py).
"""

from inverter import presets


def get_config(arg=None):
  config = presets.get_config("fc8", arg)
  config.feature_transform = "top5"
  return config
