r"""Command line: run one of the paper's studies on trained inverters.

  python -m inverter.analysis --config=configs/analysis.py:layers \
      --config.inverters=/tmp/conv1,/tmp/fc6,/tmp/fc8 \
      --workdir=/tmp/analysis

Writes /tmp/analysis/layers/{results.json, table.md, table.csv, *.png} and
prints the table. See configs/analysis.py for every study and option.
"""

from absl import app, flags
from ml_collections import config_flags

from inverter import cli
from inverter.analysis import run_study

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where the study's outputs go"
                    " (WORKDIR/STUDY/...).")
config_flags.DEFINE_config_file(
    "config", None, "configs/analysis.py:STUDY, e.g."
    " configs/analysis.py:perturb.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.hide_accelerators_from_tensorflow()
  config = FLAGS.config
  results = run_study(config, FLAGS.workdir)
  out = f"{FLAGS.workdir}/{config.study}"
  if "table" in results:
    print(results["table"])
  print(f"{config.study}: wrote {out}/results.json"
        + (", table.md, table.csv" if "table" in results else "")
        + "".join(f", {f}" for f in results.get("figures", []))
        + f" ({results['seconds']:.0f}s)")


if __name__ == "__main__":
  cli.run(main)
