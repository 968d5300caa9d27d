r"""Do the findings hold beyond AlexNet? One report over several families.

  python -m inverter.experiments.architectures --dataset=tiny_imagenet \
      --runs=caffenet=RUNS/caffenet,vgg16=RUNS/vgg16,\
resnet50=RUNS/resnet50,torchvision_googlenet=RUNS/googlenet \
      --publish=docs/results/architectures

Each run root is what `python -m inverter.experiments --arch=ARCH` wrote.
Compare roots whose inverters trained for the same number of steps (the
same `--inverter_steps`): the learning rate decays to zero at a run's last
step, so a longer run's error read part way is not the error of a run of
that length. Each table shows the steps its numbers come from. Missing
pieces become empty cells, so the report can be rebuilt while runs go on.
Written into --publish:

* `taps.md` / `.csv`: a row per family and layer: the tap, its feature
  shape and size, its relative depth (place among the family's layers over
  their number), the normalized error at the run's last step and that
  step, and the encoder's top-1 accuracy;
* `error_vs_depth.png`, `error_vs_size.png`: that error against relative
  depth and against log10 of the feature size, a line per family;
* `perturb.md` / `.csv`: binarized and 50%-dropped features, error relative
  to the unperturbed one, at every layer the perturb study ran on, with the
  fraction of feature entries above 0 (all that binarization keeps);
* `color_position.md` / `.csv`: blurred (colour) and edge-map (contour)
  error over the class-mean image's, and how often reconstructions follow a
  shift of the input (1 = always);
* `random.md` / `.csv`: the random-encoder control's error against the
  trained encoder's at the same layer;
* `reconstructions.png`: each family's `layers` study figure (the same
  evaluation images: every family reads the data set alike) under its name;
* `compute.md` / `.csv`: each family's wall time from its stages.json,
  the encoder apart from the rest (every sitting counted), and the total.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Sequence

from absl import app, flags
import numpy as np

from inverter import cli, errors, images, plots, presets
from inverter.analysis import figures
from inverter.experiments import report, reproduction, stages
from inverter.models import encoders

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Flags of the command line only (the module is also imported beside
  report.py, whose flags share these names)."""
  flags.DEFINE_enum("dataset", "tiny_imagenet", list(reproduction.DATASETS),
                    "The data set every run used.")
  flags.DEFINE_list("runs", None, "ARCH=ROOT pairs, one per family, in the"
                    " order of the report.")
  flags.DEFINE_string("publish", None, "Where to write the report.")
  flags.mark_flags_as_required(["runs", "publish"])


PERTURBATIONS = ("binarize", "dropout:0.5")


class RunsError(errors.UserError, ValueError):
  """--runs is malformed or names a family twice or a missing root."""


def parse_runs(entries: Sequence[str]) -> dict[str, pathlib.Path]:
  """['caffenet=DIR', ...] -> {'caffenet': DIR, ...}, checked."""
  runs: dict[str, pathlib.Path] = {}
  for entry in entries:
    arch, sep, root = entry.partition("=")
    if not sep or not root:
      raise RunsError(f"--runs: {entry!r} is not ARCH=ROOT.")
    try:
      presets.check_small_encoder_arch(arch)
    except ValueError as e:
      raise RunsError(f"--runs: {e}") from None
    if arch in runs:
      raise RunsError(f"--runs names {arch} twice.")
    path = pathlib.Path(root).expanduser()
    if not path.is_dir():
      raise RunsError(f"--runs: {arch}'s root {path} does not exist.")
    runs[arch] = path
  if not runs:
    raise RunsError("--runs is empty; give ARCH=ROOT pairs.")
  return runs


def _encoder_top1(root: pathlib.Path) -> float | None:
  """The top-1 accuracy of the encoder the family's inverters used: the one
  trained in ROOT/encoder, or else (a run given `--encoder=DIR`, such as
  the published AlexNet-shaped one) what DIR's metadata.json recorded when
  it was exported."""
  path = root / "encoder" / "eval" / "metrics.json"
  if path.exists():
    return json.loads(path.read_text())["top1"]
  for config in sorted(root.glob(f"{reproduction.KINDS['inverter']}/*/"
                                 "config.json")):
    weights = json.loads(config.read_text())["identity"]["encoder"].get(
        "weights", "")
    metadata = pathlib.Path(weights) / "metadata.json"
    if weights and metadata.is_file():
      return json.loads(metadata.read_text()).get("source", {}).get("top1")
  return None


def _feature_shape(workdir: pathlib.Path) -> tuple[int, ...] | None:
  """The inverted tap's per-image shape, from the run's own encoder."""
  path = workdir / "config.json"
  if not path.exists():
    return None
  encoder = presets.encoder_block(
      json.loads(path.read_text())["identity"]["encoder"])
  return encoders.tap_shapes(encoders.from_config(encoder))[encoder.tap]


def _title(arch: str) -> str:
  return presets.SMALL_ENCODER_TITLES[arch]


TAPS_HEADER = ["family", "layer", "tap", "feature shape", "feature size",
               "relative depth", "error", "steps", "encoder top-1"]


def taps_table(dataset: str, runs: dict[str, pathlib.Path]
               ) -> tuple[list[str], list[list[Any]]]:
  rows = []
  for arch, root in runs.items():
    layers = encoders.layers_of(arch)
    top1 = _encoder_top1(root)
    for i, layer in enumerate(layers):
      workdir = root / reproduction.KINDS["inverter"] / layer
      metrics = report.final_metrics(dataset, workdir, layer)
      if metrics is None:
        continue
      shape = _feature_shape(workdir)
      rows.append([
          _title(arch), layer, encoders.default_tap(arch, layer),
          "x".join(map(str, shape)) if shape else None,
          math.prod(shape) if shape else None,
          round((i + 1) / len(layers), 3),
          _round(metrics["normalized_error"]), metrics["step"],
          _round(top1)])
  return TAPS_HEADER, rows


def depth_charts(rows: list[list[Any]]):
  """(error vs relative depth, error vs log10 feature size) of taps_table's
  rows, a line per family; Nones without rows."""
  column = {name: i for i, name in enumerate(TAPS_HEADER)}
  by_depth: dict[str, tuple[list, list]] = {}
  by_size: dict[str, tuple[list, list]] = {}
  for row in rows:
    family, error = row[column["family"]], row[column["error"]]
    by_depth.setdefault(family, ([], []))
    by_depth[family][0].append(row[column["relative depth"]])
    by_depth[family][1].append(error)
    if row[column["feature size"]]:
      by_size.setdefault(family, ([], []))
      by_size[family][0].append(math.log10(row[column["feature size"]]))
      by_size[family][1].append(error)
  charts = []
  for series, x_label in ((by_depth, "relative depth (layer / layers)"),
                          (by_size, "log10 feature size")):
    charts.append(plots.line_chart(
        series, title="Reconstruction error per tap", x_label=x_label,
        y_label="normalized error") if series else None)
  return tuple(charts)


def _study(root: pathlib.Path, name: str) -> list[dict[str, Any]]:
  path = root / "analysis" / name / "results.json"
  return json.loads(path.read_text())["inverters"] if path.exists() else []


def perturb_table(runs: dict[str, pathlib.Path]):
  header = ["family", "layer", "steps",
            *(f"{p}: error" for p in PERTURBATIONS),
            *(f"{p}: over unperturbed" for p in PERTURBATIONS),
            "entries > 0"]
  rows = []
  for arch, root in runs.items():
    for inv in _study(root, "perturb"):
      found = inv["perturbations"]
      rows.append([_title(arch), inv["label"], inv.get("step"),
                   *(_round(found.get(p, {}).get("normalized_error"))
                     for p in PERTURBATIONS),
                   *(_round(found.get(p, {}).get("relative_to_unperturbed"))
                     for p in PERTURBATIONS),
                   _round(inv.get("active_fraction"))])
  return header, rows


def color_position_table(runs: dict[str, pathlib.Path]):
  header = ["family", "layer", "steps", "error", "blurred over class mean",
            "edges over class mean", "follows a shift"]
  rows = []
  for arch, root in runs.items():
    for inv in _study(root, "color_position"):
      over = inv.get("over_class_mean", {})
      rows.append([_title(arch), inv["label"], inv.get("step"),
                   _round(inv["full"]["normalized_error"]),
                   _round(over.get("blurred")), _round(over.get("edges")),
                   _round(inv["position"]["follow_ratio"])])
  return header, rows


def random_table(dataset: str, runs: dict[str, pathlib.Path]):
  """Random-encoder control against the trained encoder, where both ran."""
  header = ["family", "layer", "steps", "trained encoder", "random encoder",
            "random over trained"]
  rows = []
  for arch, root in runs.items():
    for layer in encoders.layers_of(arch):
      trained, random = (
          report.final_metrics(dataset, root / reproduction.KINDS[kind]
                               / layer, layer)
          for kind in ("inverter", "random"))
      if trained and random:
        t, r = trained["normalized_error"], random["normalized_error"]
        rows.append([_title(arch), layer, random["step"], _round(t),
                     _round(r), _round(r / t) if t else None])
  return header, rows


COMPUTE_HEADER = ["family", "stages", "encoder (h)", "inverters, studies and"
                  " controls (h)", "total (h)"]


def compute_table(runs: dict[str, pathlib.Path]):
  """Hours per family from each root's stages.json, and their sum: what the
  comparison cost on this machine. A family whose encoder was not trained in
  its root (--encoder=DIR) shows no encoder time."""
  counts = []  # (family, stages, encoder hours, other hours)
  for arch, root in runs.items():
    records = stages.records(root)
    encoder = records.get("encoder", {}).get("seconds", 0.0) / 3600
    rest = sum(r["seconds"] for name, r in records.items()
               if name != "encoder") / 3600
    counts.append((_title(arch), len(records), encoder, rest))
  if counts:
    counts.append(("all", *(sum(column) for column in list(zip(*counts))[1:])))
  rows = [[family, count, round(encoder, 2), round(rest, 2),
           round(encoder + rest, 2)]
          for family, count, encoder, rest in counts]
  return COMPUTE_HEADER, rows


def _round(value: float | None) -> float | None:
  return None if value is None else round(float(value), 4)


def reconstructions(runs: dict[str, pathlib.Path]) -> np.ndarray | None:
  """Each family's `layers` study figure under its name, stacked."""
  panels = []
  for arch, root in runs.items():
    path = root / "analysis" / "layers" / "reconstructions.png"
    if path.exists():
      panels.append((_title(arch), images.read_rgb(path)))
  return figures.stack_titled(panels) if panels else None


EMPTY = "Nothing to compare yet: no family has this study or run.\n"


def write(dataset: str, runs: dict[str, pathlib.Path],
          publish: pathlib.Path) -> None:
  publish.mkdir(parents=True, exist_ok=True)
  taps = taps_table(dataset, runs)
  tables = {"taps": taps, "perturb": perturb_table(runs),
            "color_position": color_position_table(runs),
            "random": random_table(dataset, runs),
            "compute": compute_table(runs)}
  for name, (header, rows) in tables.items():
    report.write_table(publish, name, header, rows, empty=EMPTY)
  charts = dict(zip(("error_vs_depth", "error_vs_size"),
                    depth_charts(taps[1])))
  charts["reconstructions"] = reconstructions(runs)
  for name, image in charts.items():
    if image is None:  # None of an earlier report may stay.
      (publish / f"{name}.png").unlink(missing_ok=True)
    else:
      images.write_png(publish / f"{name}.png", image)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runs = parse_runs(FLAGS.runs or [])
  write(FLAGS.dataset, runs, pathlib.Path(FLAGS.publish))
  print(f"Architectures report written to {FLAGS.publish}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
