r"""The paper's findings at small scale: CIFAR-10, end to end, resumable.

  python -m inverter.experiments.cifar10 --root=/tmp/cifar10 \
      --source=folder:../shared/data/cifar10      # or --source=cifar10 (TFDS)
  python -m inverter.experiments.cifar10 --root=/tmp/cifar10 --dry-run
  python -m inverter.experiments.cifar10 --root=/tmp/cifar10 \
      --stages='inverter_conv*,report'

Stages, in order (each an ordinary command line, see --dry-run):

1. `encoder`: the reduced AlexNet-shaped encoder trained on CIFAR-10
   (configs/encoders/cifar10.py), exported to ROOT/encoder/encoder.
2. `inverter_<layer>` for conv1..conv5, fc6, fc7, fc8, prob, and
   `inverter_fc8_top5`: decoders for the frozen trained encoder
   (`configs/<layer>.py:cifar10,encoder=ROOT/encoder/encoder`).
3. `analysis_<study>`: the six studies (`python -m inverter.analysis`) on
   the trained-encoder inverters, on the same test images.
4. `autoencoder_<layer>` (conv2, conv5, fc6, fc8): the paper's autoencoder,
   the encoder fine-tuned with the decoder from its trained weights;
   `scratch_<layer>`: the same with the encoder trained from random
   initialisation; `random_<layer>`: a decoder for the frozen, untrained,
   randomly initialised encoder (what the architecture alone keeps).
5. `analysis_baselines`: the `layers` study over all four kinds of decoder
   at the baseline layers, for their reconstructions side by side.
6. `report`: tables (markdown and CSV), error curves and figures in
   --publish (default docs/results/cifar10), with the commands, wall times
   and git commits of every stage.

A stage whose outputs exist is skipped; an interrupted one is run again and
its training resumes exactly. Every run uses seed 0 (config.seed and
encoder.init_seed); evaluation uses all 10,000 test images, the analysis
--analysis_images of them spread over the split, the same for every row.
"""

from __future__ import annotations

import json
import pathlib
import signal
import sys

from absl import app, flags

from inverter.experiments import stages as stages_lib

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8",
          "prob")
BASELINE_LAYERS = ("conv2", "conv5", "fc6", "fc8")
STUDIES = ("layers", "perturb", "interpolate", "sample", "topk",
           "color_position")
# Workdir groups under ROOT, one per kind of decoder (report column order).
KINDS = {
    "inverter": "inverters",       # frozen trained encoder
    "autoencoder": "autoencoders",  # encoder fine-tuned from trained weights
    "scratch": "scratch",          # encoder trained from random init
    "random": "random_encoder",    # frozen random encoder
}

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a program, so that the report can import this."""
  flags.DEFINE_string("root", None, "Where every stage writes its workdir.")
  flags.DEFINE_string("source", "cifar10",
                      "CIFAR-10: TFDS 'cifar10' or folder:PATH with"
                      " PATH/{train,test}/<class>/*.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir for --source=cifar10.")
  flags.DEFINE_string("stages", "", "Comma-separated fnmatch patterns of the"
                      " stages to run (default: all).")
  flags.DEFINE_bool("dry-run", False, "List the stages and commands only.")
  flags.DEFINE_string("publish", str(stages_lib.REPO_ROOT / "docs" / "results"
                                     / "cifar10"),
                      "Where the report stage writes tables and figures.")
  flags.DEFINE_integer("analysis_images", 1000,
                       "Test images each analysis study uses.")


def _steps_done(workdir: pathlib.Path, steps: int) -> bool:
  metrics = workdir / "eval" / "metrics.json"
  return metrics.exists() and json.loads(metrics.read_text())["step"] >= steps


def _num_train_steps(layer: str) -> int:
  from inverter import presets  # pylint: disable=g-import-not-at-top
  return presets.get_config(layer, "cifar10").num_train_steps


def build(root: pathlib.Path, source: str, data_dir: str | None,
          publish: pathlib.Path, analysis_images: int
          ) -> list[stages_lib.Stage]:
  """Every stage of the experiment, in order."""
  py = stages_lib.PYTHON
  data_flags = [f"--config.data.data_dir={data_dir}"] if data_dir else []
  encoder_dir = root / "encoder" / "encoder"
  out = [stages_lib.Stage(
      "encoder",
      (py, "-m", "inverter.main",
       f"--config=configs/encoders/cifar10.py:source={source}",
       f"--workdir={root / 'encoder'}", *data_flags),
      done=lambda: (encoder_dir / "metadata.json").exists(),
      description="CIFAR-10 encoder trained as a classifier")]

  def inverter_stage(kind: str, layer: str, config: str, *extra: str):
    workdir = root / KINDS[kind] / layer
    steps = _num_train_steps(layer if layer != "fc8_top5" else "fc8")
    return stages_lib.Stage(
        f"{kind}_{layer}",
        (py, "-m", "inverter.main", f"--config={config}",
         f"--workdir={workdir}", *data_flags, *extra),
        done=lambda: _steps_done(workdir, steps))

  trained = f"encoder={encoder_dir},source={source}"
  for layer in (*LAYERS, "fc8_top5"):
    out.append(inverter_stage("inverter", layer,
                              f"configs/{layer}.py:cifar10,{trained}"))
  analysis_dir = root / "analysis"
  inverters = root / KINDS["inverter"] / "*"
  for study in STUDIES:
    out.append(stages_lib.Stage(
        f"analysis_{study}",
        (py, "-m", "inverter.analysis", f"--config=configs/analysis.py:{study}",
         f"--config.inverters={inverters}",
         f"--config.num_images={analysis_images}",
         f"--workdir={analysis_dir}"),
        done=lambda s=study: (analysis_dir / s / "results.json").exists()))
  for layer in BASELINE_LAYERS:
    out.append(inverter_stage("autoencoder", layer,
                              f"configs/{layer}.py:cifar10,{trained}",
                              "--config.train_encoder=True"))
  for layer in BASELINE_LAYERS:
    out.append(inverter_stage("scratch", layer,
                              f"configs/{layer}.py:cifar10,source={source}",
                              "--config.train_encoder=True"))
  for layer in BASELINE_LAYERS:
    out.append(inverter_stage("random", layer,
                              f"configs/{layer}.py:cifar10,source={source}"))
  baselines = [str(root / KINDS["inverter"] / layer)
               for layer in BASELINE_LAYERS] + [
                   str(root / KINDS[kind] / "*")
                   for kind in ("autoencoder", "scratch", "random")]
  baselines_dir = root / "analysis_baselines"
  out.append(stages_lib.Stage(
      "analysis_baselines",
      (py, "-m", "inverter.analysis", "--config=configs/analysis.py:layers",
       f"--config.inverters=({', '.join(repr(b) for b in baselines)})",
       f"--config.num_images={analysis_images}",
       f"--workdir={baselines_dir}"),
      done=lambda: (baselines_dir / "layers" / "results.json").exists()))
  out.append(stages_lib.Stage(
      "report",
      (py, "-m", "inverter.experiments.cifar10_report", f"--root={root}",
       f"--publish={publish}"),
      done=None,  # Cheap; always rewritten from what exists.
      description="tables and figures"))
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.root:
    raise app.UsageError("--root is required (where the stages write).")
  all_stages = build(pathlib.Path(FLAGS.root).expanduser().resolve(),
                     FLAGS.source, FLAGS.data_dir,
                     pathlib.Path(FLAGS.publish).resolve(),
                     FLAGS.analysis_images)
  # On SIGTERM, as on Ctrl-C, the running stage is told to save and stop,
  # and its time so far is kept (see stages.run).
  signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
  try:
    chosen = stages_lib.select(all_stages, FLAGS.stages)
    stages_lib.run(chosen, pathlib.Path(FLAGS.root).expanduser().resolve(),
                   dry_run=FLAGS["dry-run"].value)
  except (ValueError, stages_lib.StageFailed) as e:
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(2 if isinstance(e, ValueError) else 1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
