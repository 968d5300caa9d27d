r"""Command line: a reproduction of the paper's findings on a small data set.

  python -m inverter.experiments --dataset=tiny_imagenet \
      --root=/tmp/tiny_imagenet --data_dir=~/tensorflow_datasets
  python -m inverter.experiments --dataset=cifar10 --root=/tmp/cifar10 \
      --source=folder:../shared/data/cifar10
  python -m inverter.experiments --dataset=cifar10 --root=/tmp/cifar10 \
      --dry-run                          # list the stages and commands
  python -m inverter.experiments ... --stages='inverter_conv*,report'
  python -m inverter.experiments --dataset=tiny_imagenet --root=/tmp/t \
      --data_dir=... --encoder=docs/results/tiny_imagenet/encoder \
      --stages=inverter_fc8          # one published stage, no encoder run
  python -m inverter.experiments --dataset=tiny_imagenet --arch=resnet50 \
      --root=/tmp/t_resnet --data_dir=... --inverter_steps=3000 \
      --studies=layers,perturb,color_position --baselines=random \
      --baseline_layers=conv2,fc8    # another family, on a budget

Runs the stages of inverter/experiments/reproduction.py in order, skipping
finished ones, so it can span several sittings; ROOT/stages.json records
every stage's command, wall time and git commit. SIGTERM or Ctrl-C stops
the running stage after it saves; rerun the same command to go on.
"""

import pathlib
import signal
import sys

from absl import app, flags

from inverter import cli, presets
from inverter.experiments import reproduction, stages as stages_lib

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, list(reproduction.DATASETS),
                  "The data set to reproduce the paper's findings on.")
flags.DEFINE_string("root", None, "Where every stage writes its workdir.")
flags.DEFINE_string("source", None,
                    "data.source: the data set's TFDS name (default) or"
                    " folder:PATH with PATH/<split>/<class>/*.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir of the data set.")
flags.DEFINE_string("encoder", None,
                    "A trained encoder (e.g. docs/results/DATASET/encoder)"
                    " to invert instead of training one in ROOT/encoder.")
flags.DEFINE_string("stages", "", "Comma-separated fnmatch patterns of the"
                    " stages to run (default: all).")
flags.DEFINE_bool("dry-run", False, "List the stages and commands only.")
flags.DEFINE_string("publish", None, "Where the report stage writes tables"
                    " and figures (default: docs/results/DATASET, or"
                    " docs/results/architectures/ARCH for another family).")
flags.DEFINE_integer("analysis_images", 1000,
                     "Evaluation images each analysis study uses.")
flags.DEFINE_enum("arch", "caffenet", list(presets.SMALL_ENCODER_ARCHS),
                  "The encoder's family: its reduced network is trained and"
                  " inverted (default publish dir:"
                  " docs/results/architectures/ARCH unless caffenet).")
flags.DEFINE_list("layers", None, "Layers to invert (default: every layer"
                  " the network has, then fc8_top5).")
flags.DEFINE_list("studies", list(reproduction.STUDIES),
                  "Analysis studies to run on the inverters.")
flags.DEFINE_list("baselines", list(reproduction.BASELINE_KINDS),
                  "Kinds of baseline decoder to train (empty: none).")
flags.DEFINE_list("baseline_layers", list(reproduction.BASELINE_LAYERS),
                  "Layers the baselines are trained at.")
flags.DEFINE_integer("inverter_steps", None, "Training steps of every"
                     " decoder (default: the data set preset's).")
flags.mark_flags_as_required(["dataset", "root"])


def _path(value):
  return pathlib.Path(value).expanduser().resolve() if value else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  plan = reproduction.Plan(
      dataset=FLAGS.dataset, root=_path(FLAGS.root),
      source=FLAGS.source or presets.SMALL_DATASETS[FLAGS.dataset]["source"],
      data_dir=FLAGS.data_dir, encoder=_path(FLAGS.encoder),
      publish=_path(FLAGS.publish), analysis_images=FLAGS.analysis_images,
      arch=FLAGS.arch,
      layers=tuple(FLAGS.layers) if FLAGS.layers is not None else None,
      studies=tuple(FLAGS.studies), baseline_kinds=tuple(FLAGS.baselines),
      baseline_layers=tuple(FLAGS.baseline_layers),
      inverter_steps=FLAGS.inverter_steps)
  chosen = stages_lib.select(reproduction.build(plan), FLAGS.stages)
  # On SIGTERM, as on Ctrl-C, the running stage is told to save and stop,
  # and its time so far is kept (see stages.run).
  signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
  try:
    stages_lib.run(chosen, plan.root, dry_run=FLAGS["dry-run"].value)
  except stages_lib.StageFailed as e:
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
