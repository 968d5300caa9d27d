"""inverter: learn to invert convolutional network features back into images.

After Dosovitskiy & Brox, "Inverting Visual Representations with
Convolutional Networks" (CVPR 2016). Entry points: `python -m inverter.main`,
`inverter.train.train_and_evaluate(config, workdir)`, `inverter.load(workdir)`
(a trained inverter for use, e.g. in Colab) and `python -m inverter.analysis`.
"""

__version__ = "0.1.0"


def __getattr__(name):
  # `inverter.load(path)` restores a trained inverter (inverter/loading.py);
  # imported on first use so `import inverter` stays light.
  if name == "load":
    from inverter import loading  # pylint: disable=g-import-not-at-top
    return loading.load
  raise AttributeError(f"module 'inverter' has no attribute {name!r}")
