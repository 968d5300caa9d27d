r"""Command line: run one of the paper's studies on trained inverters.

  python -m inverter.analysis --config=configs/analysis.py:layers \
      --config.inverters="('/tmp/conv1', '/tmp/fc6', '/tmp/fc8')" \
      --workdir=/tmp/analysis

Writes /tmp/analysis/layers/{results.json, table.md, table.csv, *.png} and
prints the table. See configs/analysis.py for every study and option.
"""

import logging as logging_std
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from inverter import encoder_weights
from inverter.analysis import ConfigError, common, run_study

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where the study's outputs go"
                    " (WORKDIR/STUDY/...).")
config_flags.DEFINE_config_file(
    "config", None, "configs/analysis.py:STUDY, e.g."
    " configs/analysis.py:perturb.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietOrbax(logging_std.Filter):
  """Drops Orbax's routine records (several per restored checkpoint, and a
  warning that the checkpoints are opened read-only, as intended), which
  would bury the studies' progress lines."""

  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    return (record.levelno >= logging_std.WARNING
            and "read only" not in record.getMessage())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietOrbax())
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data only; keep TensorFlow off accelerators that JAX owns.
  tf.config.set_visible_devices([], "GPU")
  config = FLAGS.config
  try:
    results = run_study(config, FLAGS.workdir)
  except (common.MissingInverterError, encoder_weights.EncoderWeightsError,
          FileNotFoundError, ConfigError) as e:
    print(f"\nERROR: {e}", file=sys.stderr)
    sys.exit(2)
  out = f"{FLAGS.workdir}/{config.study}"
  if "table" in results:
    print(results["table"])
  print(f"{config.study}: wrote {out}/results.json"
        + (", table.md, table.csv" if "table" in results else "")
        + "".join(f", {f}" for f in results.get("figures", []))
        + f" ({results['seconds']:.0f}s)")


if __name__ == "__main__":
  app.run(main)
