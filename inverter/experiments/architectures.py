r"""Do the findings hold beyond AlexNet? One report over several families.

  python -m inverter.experiments.architectures --dataset=tiny_imagenet \
      --runs=caffenet=RUNS/tiny_imagenet,vgg16=RUNS/vgg16,\
resnet50=RUNS/resnet50,torchvision_googlenet=RUNS/googlenet \
      --at_step=3000 --publish=docs/results/architectures

Each run root is what `python -m inverter.experiments --arch=ARCH` wrote
(the caffenet one may be the full reproduction's). Missing pieces become
empty cells, so the report can be rebuilt while runs are still going.
Written into --publish:

* `taps.md` / `.csv`: a row per family and layer: the tap, its feature
  shape and size, its relative depth (place among the family's layers over
  their number), the normalized error at `--at_step` (the budget every
  family's inverters share; an AlexNet inverter trained longer is read off
  its evaluation curve there) and at the run's last step, and the encoder's
  top-1 accuracy;
* `error_vs_depth.png`, `error_vs_size.png`: error at --at_step against
  relative depth and against log10 of the feature size, a line per family;
* `perturb.md` / `.csv`: binarized and 50%-dropped features, error relative
  to the unperturbed one, at every layer the perturb study ran on;
* `color_position.md` / `.csv`: blurred (colour) and edge-map (contour)
  error over the class-mean image's, and how often reconstructions follow a
  shift of the input (1 = always);
* `random.md` / `.csv`: the random-encoder control's error against the
  trained encoder's at the same layer;
* `reconstructions.png`: each family's `layers` study figure (the same
  evaluation images: every family reads the data set alike) under its name.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from typing import Any, Sequence

from absl import app, flags
import numpy as np

from inverter import cli, errors, images, plots, presets
from inverter.analysis import figures
from inverter.experiments import report, reproduction
from inverter.models import encoders

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Flags of the command line only (the module is also imported beside
  report.py, whose flags share these names)."""
  flags.DEFINE_enum("dataset", "tiny_imagenet", list(reproduction.DATASETS),
                    "The data set every run used.")
  flags.DEFINE_list("runs", None, "ARCH=ROOT pairs, one per family, in the"
                    " order of the report.")
  flags.DEFINE_integer("at_step", None, "The training step at which every"
                       " family's inverters are compared (default: their"
                       " last step).")
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
    if arch not in presets.SMALL_ENCODER_ARCHS:
      raise RunsError(f"--runs: unknown family {arch!r}; one of"
                      f" {', '.join(presets.SMALL_ENCODER_ARCHS)}.")
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
  path = root / "encoder" / "eval" / "metrics.json"
  return json.loads(path.read_text())["top1"] if path.exists() else None


def _feature_shape(workdir: pathlib.Path) -> tuple[int, ...] | None:
  """The inverted tap's per-image shape, from the run's own encoder."""
  path = workdir / "config.json"
  if not path.exists():
    return None
  identity = json.loads(path.read_text())["identity"]["encoder"]
  # The identity holds the defining fields; the rest (e.g. how groups run)
  # are the family's defaults.
  encoder = presets.encoder_config(identity["arch"])
  for key, value in identity.items():
    encoder[key] = tuple(value) if isinstance(value, list) else value
  shapes = encoders.tap_shapes(encoders.from_config(encoder))
  return shapes[encoder.tap]


def _error_at(workdir: pathlib.Path, step: int | None) -> float | None:
  """The evaluation error at `step` (None if not evaluated there)."""
  steps, values = report.eval_curve(workdir)
  if step is None:
    return None
  return next((v for s, v in zip(steps, values) if s == step), None)


def taps_table(dataset: str, runs: dict[str, pathlib.Path],
               at_step: int | None) -> tuple[list[str], list[list[Any]]]:
  header = ["family", "layer", "tap", "feature shape", "feature size",
            "relative depth", f"error at step {at_step or 'last'}",
            "last step", "error at last step", "encoder top-1"]
  rows = []
  for arch, root in runs.items():
    layers = encoders.layers_of(arch)
    top1 = _encoder_top1(root)
    for i, layer in enumerate(layers):
      workdir = root / reproduction.KINDS["inverter"] / layer
      metrics = report.final_metrics(dataset, workdir, layer)
      shape = _feature_shape(workdir)
      at = _error_at(workdir, at_step) if at_step else (
          metrics and metrics["normalized_error"])
      if shape is None and at is None:
        continue
      rows.append([
          arch, layer, encoders.default_tap(arch, layer),
          "x".join(map(str, shape)) if shape else None,
          math.prod(shape) if shape else None,
          round((i + 1) / len(layers), 3),
          None if at is None else round(at, 4),
          metrics and metrics["step"],
          None if metrics is None else round(metrics["normalized_error"], 4),
          None if top1 is None else round(top1, 4)])
  return header, rows


def depth_charts(header: list[str], rows: list[list[Any]]):
  """(error vs relative depth, error vs log10 feature size), or Nones."""
  error = next(i for i, h in enumerate(header) if h.startswith("error at"))
  depth, size = header.index("relative depth"), header.index("feature size")
  by_depth: dict[str, tuple[list, list]] = {}
  by_size: dict[str, tuple[list, list]] = {}
  for row in rows:
    if row[error] is None:
      continue
    by_depth.setdefault(row[0], ([], []))
    by_depth[row[0]][0].append(row[depth])
    by_depth[row[0]][1].append(row[error])
    if row[size]:
      by_size.setdefault(row[0], ([], []))
      by_size[row[0]][0].append(math.log10(row[size]))
      by_size[row[0]][1].append(row[error])
  label = header[error].replace("error", "normalized error")
  charts = []
  for series, x_label in ((by_depth, "relative depth (layer / layers)"),
                          (by_size, "log10 feature size")):
    charts.append(plots.line_chart(
        series, title="Reconstruction error per tap", x_label=x_label,
        y_label=label) if series else None)
  return tuple(charts)


def _study(root: pathlib.Path, name: str) -> list[dict[str, Any]]:
  path = root / "analysis" / name / "results.json"
  return json.loads(path.read_text())["inverters"] if path.exists() else []


def perturb_table(runs: dict[str, pathlib.Path]):
  header = ["family", "layer", *(f"{p}: error" for p in PERTURBATIONS),
            *(f"{p}: over unperturbed" for p in PERTURBATIONS)]
  rows = []
  for arch, root in runs.items():
    for inv in _study(root, "perturb"):
      found = inv["perturbations"]
      rows.append([arch, inv["label"],
                   *(_round(found.get(p, {}).get("normalized_error"))
                     for p in PERTURBATIONS),
                   *(_round(found.get(p, {}).get("relative_to_unperturbed"))
                     for p in PERTURBATIONS)])
  return header, rows


def color_position_table(runs: dict[str, pathlib.Path]):
  header = ["family", "layer", "error", "blurred over class mean",
            "edges over class mean", "follows a shift"]
  rows = []
  for arch, root in runs.items():
    for inv in _study(root, "color_position"):
      over = inv.get("over_class_mean", {})
      rows.append([arch, inv["label"],
                   _round(inv["full"]["normalized_error"]),
                   _round(over.get("blurred")), _round(over.get("edges")),
                   _round(inv["position"]["follow_ratio"])])
  return header, rows


def random_table(dataset: str, runs: dict[str, pathlib.Path]):
  """Random-encoder control against the trained encoder, where both ran."""
  header = ["family", "layer", "trained encoder", "random encoder",
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
        rows.append([arch, layer, _round(t), _round(r), _round(r / t)])
  return header, rows


def _round(value: float | None) -> float | None:
  return None if value is None else round(float(value), 4)


def reconstructions(runs: dict[str, pathlib.Path]) -> np.ndarray | None:
  """Each family's `layers` study figure under its name, stacked."""
  panels = []
  for arch, root in runs.items():
    path = root / "analysis" / "layers" / "reconstructions.png"
    if path.exists():
      panels.append((arch, images.read_rgb(path)))
  return figures.stack_titled(panels) if panels else None


def write(dataset: str, runs: dict[str, pathlib.Path], publish: pathlib.Path,
          at_step: int | None = None) -> None:
  publish.mkdir(parents=True, exist_ok=True)
  tables = {"taps": taps_table(dataset, runs, at_step),
            "perturb": perturb_table(runs),
            "color_position": color_position_table(runs),
            "random": random_table(dataset, runs)}
  for name, (header, rows) in tables.items():
    report.write_table(publish, name, header, rows)
  for name, chart in zip(("error_vs_depth", "error_vs_size"),
                         depth_charts(*tables["taps"])):
    if chart is not None:
      images.write_png(publish / f"{name}.png", chart)
  figure = reconstructions(runs)
  if figure is not None:
    images.write_png(publish / "reconstructions.png", figure)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runs = parse_runs(FLAGS.runs or [])
  write(FLAGS.dataset, runs, pathlib.Path(FLAGS.publish), FLAGS.at_step)
  print(f"Architectures report written to {FLAGS.publish}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
