r"""The paper's studies on trained inverters (python -m inverter.analysis).

  python -m inverter.analysis --config=configs/analysis.py:STUDY \
      --config.inverters=/tmp/conv1,/tmp/fc6,/tmp/fc8 \
      --workdir=/tmp/analysis

STUDY is one of layers, perturb, interpolate, sample, topk, color_position,
optimization (see inverter/analysis/__init__.py). `inverters` takes workdirs (local or
gs://) or globs, comma-separated or as a Python tuple, e.g.
--config.inverters='/tmp/demo_*' or --config.inverters=/tmp/a,/tmp/b. Examples:

  # The paper's table and figure: every layer on the same images.
  python -m inverter.analysis --config=configs/analysis.py:layers \
      --config.inverters='/tmp/demo_*' --workdir=/tmp/analysis
  # Perturbed features, with other noise levels.
  python -m inverter.analysis --config=configs/analysis.py:perturb \
      --config.inverters='/tmp/demo_*' --workdir=/tmp/analysis \
      --config.perturb.perturbations="('binarize', 'dropout:0.5', 'noise:5')"
  # Samples of fc6 from a truncated full-covariance Gaussian.
  python -m inverter.analysis --config=configs/analysis.py:sample \
      --config.inverters=/tmp/demo_fc6 --config.sample.method=gaussian \
      --workdir=/tmp/analysis
  # fc8 from its top-5 activations, with the inverter trained on them
  # (python -m inverter.main --config=configs/fc8_top5.py:demo ...).
  python -m inverter.analysis --config=configs/analysis.py:topk \
      --config.inverters=/tmp/demo_fc8,/tmp/demo_fc8_top5 \
      --workdir=/tmp/analysis

Images: by default each inverter's own evaluation data (its config's
data.source and eval split); `data.source` points every inverter at other
images ('folder:PATH', 'builtin:skimage' or a TFDS name).
"""

import ml_collections

STUDIES = ("layers", "perturb", "interpolate", "sample", "topk",
           "color_position", "optimization")


def get_config(study=None):
  if study not in STUDIES:
    raise ValueError(f"Unknown study {study!r}; use configs/analysis.py:STUDY"
                     f" with STUDY one of {', '.join(STUDIES)}.")
  c = ml_collections.ConfigDict()
  c.study = study
  # Inverter workdirs (local or gs://) or globs of them.
  c.inverters = ()
  # Where the encoder weights are, if not where the inverters were trained.
  c.encoder_weights = ""
  c.data = ml_collections.ConfigDict(dict(
      source="",  # '' = each inverter's own evaluation data.
      data_dir="",
      split="",  # '' = the inverter's eval split.
  ))
  c.num_images = 64  # -1: all images of the split.
  # Images per batch; the normalized error compares images within a batch,
  # as training's evaluation does (64 there too).
  c.batch_size = 64
  c.num_figure_images = 6
  c.seed = 0

  c.perturb = ml_collections.ConfigDict(dict(
      perturbations=("binarize", "dropout:0.5", "noise:20", "noise:10",
                     "noise:0", "quantize:4", "quantize:2"),
  ))
  c.interpolate = ml_collections.ConfigDict(dict(num_pairs=3, steps=8))
  c.sample = ml_collections.ConfigDict(dict(
      method="marginal",  # or 'gaussian' (truncated at 0 after ReLUs)
      num_samples=8,
      num_fit_images=-1,  # -1: all num_images study images.
      layers=(),  # () = every given inverter, e.g. ('fc6', 'fc7').
  ))
  c.topk = ml_collections.ConfigDict(dict(k=5))
  c.color_position = ml_collections.ConfigDict(dict(
      blur_size=8,
      # Rough contours: Sobel magnitude of the grey image at this size.
      edge_size=16,
      # Compare with the data set's and the true class's mean image (from
      # the training split), where the images have labels.
      class_references=True,
      reference_images=-1,  # Training images for the means; -1: all.
      # Translations as fractions of the input size (each left, right, up,
      # down).
      shifts=(0.0625, 0.125),
      num_images=8,
  ))
  c.optimization = ml_collections.ConfigDict(dict(
      methods=("decoder", "optimize", "hybrid"),
      # Mahendran & Vedaldi's schedule (inverter/optimization.py).
      iterations=300,
      final_iterations=50,
      feature_weight=0.0,  # C; 0 = the per-layer default
      feature_weights=(),  # a sweep: one M&V row per C, e.g. (1, 20, 100)
      anchor_weight=0.0,  # the hybrid's pull to the decoder's output
      jitter=-1,  # -1 = M&V's max(round(stride / 4), 1)
      seed=0,
  ))
  if study == "optimization":
    # Each image costs hundreds of encoder passes: a smaller default set.
    c.num_images = 64
    c.num_figure_images = 2
  return c
