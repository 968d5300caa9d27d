r"""Do the findings hold beyond AlexNet? One report over several families.

  python -m inverter.experiments.architectures --dataset=tiny_imagenet \
      --reports=caffenet=docs/results/architectures/caffenet,\
vgg16=docs/results/architectures/vgg16,\
resnet50=docs/results/architectures/resnet50,\
torchvision_googlenet=docs/results/architectures/torchvision_googlenet \
      --publish=docs/results/architectures

Each family's report is what `python -m inverter.experiments.report` (the
last stage of `python -m inverter.experiments --arch=ARCH`) published: its
summary.json, stages.json and analysis studies. Reading published reports
rather than run roots lets the comparison be rebuilt from the repository
alone, long after the runs' checkpoints are gone. Compare families whose
inverters trained for the same number of steps (the same
`--inverter_steps`): the learning rate decays to zero at a run's last step,
so a longer run's error read part way is not the error of a run of that
length. Each table shows the steps its numbers come from. Missing pieces
become empty cells, so the report can be rebuilt while runs go on.
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
  flags.DEFINE_list("reports", None, "ARCH=DIR pairs, one per family in the"
                    " order of the report: DIR is the family's published"
                    " report (python -m inverter.experiments.report).")
  flags.DEFINE_string("publish", None, "Where to write the report.")
  flags.mark_flags_as_required(["reports", "publish"])


PERTURBATIONS = ("binarize", "dropout:0.5")


class ReportsError(errors.UserError, ValueError):
  """--reports is malformed, names a family twice, or a directory that is
  not that family's published report on the data set."""


def parse_reports(entries: Sequence[str], dataset: str
                  ) -> dict[str, pathlib.Path]:
  """['caffenet=DIR', ...] -> {'caffenet': DIR, ...}, each DIR checked to be
  a published report of that family on `dataset`."""
  reports: dict[str, pathlib.Path] = {}
  for entry in entries:
    arch, sep, directory = entry.partition("=")
    if not sep or not directory:
      raise ReportsError(f"--reports: {entry!r} is not ARCH=DIR.")
    try:
      presets.check_small_encoder_arch(arch)
    except ValueError as e:
      raise ReportsError(f"--reports: {e}") from None
    if arch in reports:
      raise ReportsError(f"--reports names {arch} twice.")
    path = pathlib.Path(directory).expanduser()
    if not (path / report.SUMMARY).is_file():
      raise ReportsError(
          f"--reports: {arch}'s {path} is not a published report (no"
          f" {report.SUMMARY}); write it with python -m"
          " inverter.experiments.report --root=ROOT --publish=DIR.")
    found = _summary(path)
    if found["dataset"] != dataset:
      raise ReportsError(f"--reports: {path} is a report on"
                         f" {found['dataset']}, not {dataset}.")
    if found.get("arch") not in (None, arch):
      raise ReportsError(f"--reports: {path} is {found['arch']}'s report,"
                         f" not {arch}'s.")
    reports[arch] = path
  if not reports:
    raise ReportsError("--reports is empty; give ARCH=DIR pairs.")
  return reports


def _summary(path: pathlib.Path) -> dict[str, Any]:
  return json.loads((path / report.SUMMARY).read_text())


def _title(arch: str) -> str:
  return presets.SMALL_ENCODER_TITLES[arch]


TAPS_HEADER = ["family", "layer", "tap", "feature shape", "feature size",
               "relative depth", "error", "steps", "encoder top-1"]


def taps_table(reports: dict[str, pathlib.Path]
               ) -> tuple[list[str], list[list[Any]]]:
  rows = []
  for arch, path in reports.items():
    found = _summary(path)
    layers = encoders.layers_of(arch)
    runs = found["runs"].get("inverter", {})
    for i, layer in enumerate(layers):
      if layer not in runs:
        continue
      run = runs[layer]
      shape = run.get("feature_shape")
      rows.append([
          _title(arch), layer, encoders.default_tap(arch, layer),
          "x".join(map(str, shape)) if shape else None,
          math.prod(shape) if shape else None,
          round((i + 1) / len(layers), 3),
          _round(run["normalized_error"]), run["step"],
          _round(found["encoder"].get("top1"))])
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


def _study(path: pathlib.Path, name: str) -> list[dict[str, Any]]:
  path = path / "analysis" / name / "results.json"
  return json.loads(path.read_text())["inverters"] if path.exists() else []


def perturb_table(reports: dict[str, pathlib.Path]):
  header = ["family", "layer", "steps",
            *(f"{p}: error" for p in PERTURBATIONS),
            *(f"{p}: over unperturbed" for p in PERTURBATIONS),
            "entries > 0"]
  rows = []
  for arch, path in reports.items():
    for inv in _study(path, "perturb"):
      found = inv["perturbations"]
      rows.append([_title(arch), inv["label"], inv.get("step"),
                   *(_round(found.get(p, {}).get("normalized_error"))
                     for p in PERTURBATIONS),
                   *(_round(found.get(p, {}).get("relative_to_unperturbed"))
                     for p in PERTURBATIONS),
                   _round(inv.get("active_fraction"))])
  return header, rows


def color_position_table(reports: dict[str, pathlib.Path]):
  header = ["family", "layer", "steps", "error", "blurred over class mean",
            "edges over class mean", "follows a shift"]
  rows = []
  for arch, path in reports.items():
    for inv in _study(path, "color_position"):
      over = inv.get("over_class_mean", {})
      rows.append([_title(arch), inv["label"], inv.get("step"),
                   _round(inv["full"]["normalized_error"]),
                   _round(over.get("blurred")), _round(over.get("edges")),
                   _round(inv["position"]["follow_ratio"])])
  return header, rows


def random_table(reports: dict[str, pathlib.Path]):
  """Random-encoder control against the trained encoder, where both ran."""
  header = ["family", "layer", "steps", "trained encoder", "random encoder",
            "random over trained"]
  rows = []
  for arch, path in reports.items():
    runs = _summary(path)["runs"]
    for layer in encoders.layers_of(arch):
      trained = runs.get("inverter", {}).get(layer)
      random = runs.get("random", {}).get(layer)
      if trained and random:
        t, r = trained["normalized_error"], random["normalized_error"]
        rows.append([_title(arch), layer, random["step"], _round(t),
                     _round(r), _round(r / t) if t else None])
  return header, rows


COMPUTE_HEADER = ["family", "stages", "encoder (h)", "inverters, studies and"
                  " controls (h)", "total (h)"]


def compute_table(reports: dict[str, pathlib.Path]):
  """Hours per family from each report's stages.json, and their sum: what
  the comparison cost on this machine. A family whose encoder was trained
  for another report (its inverters given --encoder=DIR, as the
  AlexNet-shaped family's) shows no encoder time."""
  counts = []  # (family, stages, encoder hours, other hours)
  for arch, path in reports.items():
    records = stages.records(path)
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


def reconstructions(reports: dict[str, pathlib.Path]) -> np.ndarray | None:
  """Each family's `layers` study figure under its name, stacked."""
  panels = []
  for arch, path in reports.items():
    figure = path / "analysis" / "layers" / "reconstructions.png"
    if figure.exists():
      panels.append((_title(arch), images.read_rgb(figure)))
  return figures.stack_titled(panels) if panels else None


EMPTY = "Nothing to compare yet: no family has this study or run.\n"


def write(reports: dict[str, pathlib.Path], publish: pathlib.Path) -> None:
  """The report across families of `reports` (parse_reports' checked
  {arch: published report}) into publish."""
  publish.mkdir(parents=True, exist_ok=True)
  taps = taps_table(reports)
  tables = {"taps": taps, "perturb": perturb_table(reports),
            "color_position": color_position_table(reports),
            "random": random_table(reports),
            "compute": compute_table(reports)}
  for name, (header, rows) in tables.items():
    report.write_table(publish, name, header, rows, empty=EMPTY)
  charts = dict(zip(("error_vs_depth", "error_vs_size"),
                    depth_charts(taps[1])))
  charts["reconstructions"] = reconstructions(reports)
  for name, image in charts.items():
    if image is None:  # None of an earlier report may stay.
      (publish / f"{name}.png").unlink(missing_ok=True)
    else:
      images.write_png(publish / f"{name}.png", image)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  reports = parse_reports(FLAGS.reports or [], FLAGS.dataset)
  write(reports, pathlib.Path(FLAGS.publish))
  print(f"Architectures report written to {FLAGS.publish}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
