"""inverter: learn to invert convolutional network features back into images.

After Dosovitskiy & Brox, "Inverting Visual Representations with
Convolutional Networks" (CVPR 2016). Entry points: `python -m inverter.main`
and `inverter.train.train_and_evaluate(config, workdir)`.
"""

__version__ = "0.1.0"
