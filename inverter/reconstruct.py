r"""Command line: reconstruct your own photos from trained inverters.

  python -m inverter.reconstruct cat.jpg dog.png \
      --inverters=/runs/conv3,/runs/fc6,/runs/fc8 --out=reconstructions.png
  python -m inverter.reconstruct photos/*.jpg --inverters='/runs/demo_*' \
      --method=hybrid --out=hybrid.png

Writes one figure: a row per image, the input (as the encoder sees it,
warped and cropped) and then a column per inverter. `--method` picks how
features become an image: `decoder` (the trained decoder: one forward pass),
`optimize` (Mahendran & Vedaldi's optimisation from noise: hundreds of
encoder passes per image) or `hybrid` (that optimisation started from the
decoder's output); see docs/optimization.md. Every image and workdir is
checked before any work starts.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags, logging
from etils import epath

from inverter import cli, images, loading, optimization
from inverter.analysis import common, figures

FLAGS = flags.FLAGS
flags.DEFINE_list("inverters", None, "Inverter workdirs (local or gs://) or"
                  " globs, comma-separated.")
flags.DEFINE_enum("method", "decoder", list(optimization.METHODS),
                  "How features become an image.")
flags.DEFINE_string("out", None, "The figure to write (.png).")
flags.DEFINE_string("encoder_weights", None, "Where the encoder weights are,"
                    " if not where the inverters were trained.")
flags.DEFINE_integer("iterations", optimization.Settings.iterations,
                     "optimize/hybrid: jittered iterations.")
flags.DEFINE_integer("final_iterations",
                     optimization.Settings.final_iterations,
                     "optimize/hybrid: iterations without jitter.")
flags.DEFINE_float("feature_weight", 0.0, "optimize/hybrid: C (0 = the"
                   " per-layer default).")
flags.DEFINE_float("anchor_weight", 0.0, "hybrid: pull towards the"
                   " decoder's output.")
flags.DEFINE_integer("seed", 0, "optimize: the noise it starts from.")
flags.mark_flags_as_required(["inverters", "out"])


def settings() -> optimization.Settings:
  return optimization.Settings.from_config(dict(
      iterations=FLAGS.iterations, final_iterations=FLAGS.final_iterations,
      feature_weight=FLAGS.feature_weight,
      anchor_weight=FLAGS.anchor_weight, seed=FLAGS.seed))


def figure(inputs: np.ndarray, columns: dict[str, np.ndarray]) -> np.ndarray:
  """Rows: images; columns: the input, then each inverter's output."""
  return figures.grid(
      [[inputs[i]] + [out[i] for out in columns.values()]
       for i in range(len(inputs))],
      col_titles=["input"] + list(columns))


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Name the images to reconstruct, e.g."
                         " python -m inverter.reconstruct cat.jpg"
                         " --inverters=DIR --out=figure.png")
  if not FLAGS.out.lower().endswith(".png"):
    raise images.ImageInputError(f"--out={FLAGS.out}: write a .png figure.")
  chosen = settings()
  # Everything is checked before any work: images, workdirs, the figure.
  pictures = images.as_rgb_list(paths)
  workdirs = common.inverter_paths(FLAGS.inverters)
  for path in workdirs:
    loading.saved_config(path)
  cli.hide_accelerators_from_tensorflow()
  inverters = [loading.load(path, encoder_weights=FLAGS.encoder_weights)
               for path in workdirs]
  labels = common.unique_labels([inv.name for inv in inverters],
                                [inv.path for inv in inverters])
  columns, inputs = {}, None
  for inv, label in zip(inverters, labels):
    start = time.monotonic()
    logging.info("%s: %s reconstruction of %d image(s).", label,
                 FLAGS.method, len(pictures))
    x = inv.preprocess(pictures)
    columns[label] = inv.to_rgb(inv.decode_by(FLAGS.method, inv.encode(x),
                                              chosen))
    if inputs is None:
      inputs = inv.to_rgb(inv.target(x))
    logging.info("%s: done in %.1fs.", label, time.monotonic() - start)
  out = epath.Path(FLAGS.out)
  common.write_figure(out.parent, out.name,
                      figure(inputs, _same_size(columns, inputs.shape[1])))
  print(f"Wrote {FLAGS.out}: {len(pictures)} image(s) x"
        f" {len(inverters)} inverter(s), method {FLAGS.method}.")


def _same_size(columns: dict[str, np.ndarray],
               size: int) -> dict[str, np.ndarray]:
  """Every column at the input column's size (decoders may differ)."""
  out = {}
  for label, images_ in columns.items():
    if images_.shape[1] != size:
      images_ = np.asarray(jax.image.resize(
          images_.astype(np.float32), (len(images_), size, size, 3),
          "linear")).clip(0, 255).round().astype(np.uint8)
    out[label] = images_
  return out


if __name__ == "__main__":
  cli.run(main)
