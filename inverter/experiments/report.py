r"""The report stage of a reproduction: tables, curves, figures.

  python -m inverter.experiments.report --dataset=cifar10 --root=ROOT \
      --encoder=ROOT/encoder/encoder --publish=docs/results/cifar10

Reads what the other stages wrote under ROOT (missing runs become empty
cells) and writes into --publish:

* `main.md` / `main.csv`: normalized reconstruction error on the evaluation
  split for every layer (rows) and kind of decoder (columns), with the
  encoder's accuracy;
* `encoder/`: a copy of the trained encoder (a few MB, the ported-encoder
  format), so that any inverter stage can be rerun without training it;
* `curves.png`, `curves_baselines.png`: evaluation error against training
  step (read from each run's TensorBoard events), to show it has flattened,
  and `flattening.md` / `.csv`: each run's change of error over its last
  fifth of training;
* `encoder_accuracy.png`: the encoder's top-1 and top-5 accuracy against
  its training step;
* `reconstructions.png` and the analysis studies' tables and figures
  (`analysis/<study>/`);
* `stages.md` / `stages.json`: every stage's exact command, wall time and
  git commit. Stages an earlier report into the same place recorded and
  ROOT lacks are kept (an encoder published from a root since lost, whose
  inverters ran in a new root with `--encoder=`);
* `summary.json`: what the report across families
  (`inverter.experiments.architectures`) reads, so that it is rebuilt from
  published reports alone: the data set, the family, the encoder's
  accuracy, and every finished run's final error, step and feature shape.
"""

from __future__ import annotations

import csv
import json
import pathlib
import shutil
from typing import Any

from absl import app, flags
import numpy as np

from inverter import cli, images, plots, presets
from inverter.experiments import reproduction, stages
from inverter.models import encoders

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Flags of the command line only, so that other tools can import this
  module beside their own flags of the same names."""
  flags.DEFINE_enum("dataset", None, list(reproduction.DATASETS),
                    "The reproduction's data set.")
  flags.DEFINE_string("root", None, "The experiment's --root.")
  flags.DEFINE_string("encoder", None, "The trained encoder the inverters"
                      " used (default ROOT/encoder/encoder).")
  flags.DEFINE_string("publish", None, "Where to write the report.")
  flags.mark_flags_as_required(["dataset", "root", "publish"])


COLUMNS = {"inverter": "fixed trained encoder",
           "autoencoder": "autoencoder (fine-tuned)",
           "scratch": "autoencoder (from scratch)",
           "random": "fixed random encoder"}
ROWS = (*reproduction.LAYERS, "fc8_top5")
KINDS = reproduction.KINDS


def final_metrics(dataset: str, workdir: pathlib.Path,
                  layer: str) -> dict[str, Any] | None:
  """The final evaluation of a finished run (None while it still trains:
  its metrics.json then holds an intermediate evaluation). Finished means
  the run's own num_train_steps (its config.json; a plan may shorten the
  preset's), else the preset's."""
  path = workdir / "eval" / "metrics.json"
  if not path.exists():
    return None
  metrics = json.loads(path.read_text())
  steps = (reproduction.planned_steps(workdir)
           or reproduction.num_train_steps(dataset, layer))
  return metrics if metrics["step"] >= steps else None


def scalar_curve(workdir: pathlib.Path, tag: str) -> tuple[list, list]:
  """(steps, values) of a scalar in a run's TensorBoard event files; where
  a step was logged twice (an eval-only rerun), the later file wins."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found: dict[int, float] = {}
  for path in sorted(workdir.glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == tag:
          found[int(event.step)] = float(tf.make_ndarray(value.tensor))
  steps = sorted(found)
  return steps, [found[s] for s in steps]


def eval_curve(workdir: pathlib.Path) -> tuple[list, list]:
  """(steps, normalized error) of a run's evaluations during training.

  Each point is that evaluation's mean L2 error over the run's final mean
  pair distance (eval/metrics.json). Every evaluation of a run sees the
  same images, so the pair distance is one constant; taking the final one
  keeps the curve on the table's scale even where the evaluation order was
  changed after training (the mean L2 error does not depend on the order,
  the distance between images of a batch does).
  """
  steps, l2 = scalar_curve(workdir, "eval/mean_l2_error")
  metrics = workdir / "eval" / "metrics.json"
  pair = (json.loads(metrics.read_text()).get("mean_pair_distance")
          if metrics.exists() else None)
  if not steps or not pair:
    return scalar_curve(workdir, "eval/normalized_error")
  return steps, [v / pair for v in l2]


def main_table(dataset: str, root: pathlib.Path
               ) -> tuple[list[str], list[list[Any]]]:
  header = ["layer", *COLUMNS.values()]
  rows = []
  for layer in ROWS:
    row: list[Any] = [layer]
    for kind in COLUMNS:
      metrics = final_metrics(dataset, root / KINDS[kind] / layer, layer)
      row.append(None if metrics is None
                 else round(metrics["normalized_error"], 4))
    if any(v is not None for v in row[1:]):
      rows.append(row)
  return header, rows


def _markdown(header: list[str], rows: list[list[Any]]) -> str:
  def cell(v):
    return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def write_table(publish: pathlib.Path, name: str, header, rows,
                preface: str = "",
                empty: str = "No run has reached its last step yet.\n"
                ) -> None:
  table = _markdown(header, rows) if rows else empty
  (publish / f"{name}.md").write_text(preface + table)
  with (publish / f"{name}.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def _y_label(dataset: str) -> str:
  return f"normalized error ({presets.SMALL_DATASETS[dataset]['eval_split']})"


def _curves(dataset: str, root: pathlib.Path,
            kinds_layers: list[tuple[str, str]], title: str):
  series = {}
  for kind, layer in kinds_layers:
    steps, values = eval_curve(root / KINDS[kind] / layer)
    if steps:
      series[layer if kind == "inverter" else f"{layer} {kind}"] = (
          steps, values)
  if not series:
    return None
  return plots.line_chart(series, title=title, x_label="training step",
                          y_label=_y_label(dataset))


def baseline_curves(dataset: str, root: pathlib.Path):
  """One panel per layer that has a baseline run (whichever layers the plan
  chose), each with every kind of decoder, in the same colour in every
  panel; None while no baseline has been evaluated."""
  panels = []
  for layer in reproduction.LAYERS:
    series = {}
    for kind, name in COLUMNS.items():
      steps, values = eval_curve(root / KINDS[kind] / layer)
      # An empty series keeps the kind's colour the same in every panel.
      series[name] = (steps, values)
    baselines = [steps for kind, (steps, _) in zip(COLUMNS, series.values())
                 if kind != "inverter"]
    if any(baselines):
      panels.append(plots.line_chart(
          series, title=layer, x_label="training step",
          y_label=_y_label(dataset), width=620, height=360))
  if not panels:
    return None
  blank = np.full_like(panels[0], 255)
  panels += [blank] * (len(panels) % 2)
  return np.concatenate([np.concatenate(panels[i:i + 2], axis=1)
                         for i in range(0, len(panels), 2)], axis=0)


def published_ledger(root: pathlib.Path, publish: pathlib.Path
                     ) -> dict[str, dict[str, Any]]:
  """ROOT's stages.json over the one an earlier report left in publish:
  ROOT's record of a stage wins, and stages only the earlier report knew
  stay (they ran in a root that is gone, e.g. the encoder's)."""
  ledger = stages.records(publish)
  ledger.update(stages.records(root))
  return ledger


def _stages_md(records: dict[str, dict[str, Any]]) -> str:
  total = sum(r["seconds"] for r in records.values())
  lines = [f"Wall time on this machine: {total / 3600:.2f} h over"
           f" {len(records)} stages. A stage run in several sittings (it"
           " resumes from its last checkpoint) counts all of them.\n",
           "| stage | wall time | sittings | git commit | command |",
           "|---|---|---|---|---|"]
  for name, r in records.items():
    lines.append(f"| {name} | {r['seconds'] / 60:.1f} min |"
                 f" {r.get('attempts', 1)} | {r['commit'][:12]} |"
                 f" `{r['command']}` |")
  notes = [f"- {name}: {r['note']}" for name, r in records.items()
           if r.get("note")]
  if notes:
    lines += ["", "Notes:", *notes]
  return "\n".join(lines) + "\n"


def encoder_curve(dataset: str, root: pathlib.Path):
  """The encoder's evaluation accuracy (%) against its training step; None
  before its first evaluation."""
  series = {}
  for k in ("top1", "top5"):
    steps, values = scalar_curve(root / "encoder", f"eval/{k}")
    series[f"top-{k[-1]}"] = (steps, [100 * v for v in values])
  if not any(steps for steps, _ in series.values()):
    return None
  split = presets.SMALL_DATASETS[dataset]["eval_split"]
  return plots.line_chart(series, title="Encoder accuracy",
                          x_label="training step",
                          y_label=f"accuracy, % ({split})")


def flattening_table(dataset: str, root: pathlib.Path
                     ) -> tuple[list[str], list[list[Any]]]:
  """Per finished run: the error at the first evaluation in the last fifth
  of training, at the end, and the relative change between them. (A run
  still training is left out: its "last fifth" would be of the steps so
  far, and its change would read as a run that has not flattened.)"""
  header = ["run", "step at 4/5", "error at 4/5", "final step",
            "final error", "change over the last fifth, %"]
  rows = []
  for kind in COLUMNS:
    for layer in ROWS:
      workdir = root / KINDS[kind] / layer
      if final_metrics(dataset, workdir, layer) is None:
        continue
      steps, values = eval_curve(workdir)
      if len(steps) < 2:
        continue
      i = next(i for i, step in enumerate(steps) if step >= 0.8 * steps[-1])
      i = min(i, len(steps) - 2)
      rows.append([f"{kind}_{layer}", steps[i], round(values[i], 4),
                   steps[-1], round(values[-1], 4),
                   round(100 * (values[-1] - values[i]) / values[i], 2)])
  return header, rows


SUMMARY = "summary.json"


def _run_encoder(workdir: pathlib.Path) -> dict[str, Any] | None:
  """The encoder block a run recorded in its config.json (None before it
  started)."""
  path = workdir / "config.json"
  if not path.exists():
    return None
  return json.loads(path.read_text())["identity"]["encoder"]


def feature_shape(workdir: pathlib.Path) -> tuple[int, ...] | None:
  """The inverted tap's per-image shape, from the run's own encoder."""
  recorded = _run_encoder(workdir)
  if recorded is None:
    return None
  encoder = presets.encoder_block(recorded)
  return encoders.tap_shapes(encoders.from_config(encoder))[encoder.tap]


def encoder_accuracy(root: pathlib.Path, encoder: pathlib.Path | None
                     ) -> dict[str, float]:
  """{top1, top5, num_images} of the encoder the inverters used: the one
  trained in ROOT/encoder, or else what the exported encoder's
  metadata.json recorded (a run given `--encoder=DIR`); {} when neither
  says."""
  metrics = root / "encoder" / "eval" / "metrics.json"
  if metrics.exists():
    found = json.loads(metrics.read_text())
  elif encoder is not None and (encoder / "metadata.json").is_file():
    found = json.loads((encoder / "metadata.json").read_text()).get(
        "source", {})
    if "eval_num_images" in found:
      found = dict(found, num_images=found["eval_num_images"])
  else:
    found = {}
  return {k: found[k] for k in ("top1", "top5", "num_images") if k in found}


def summary(dataset: str, root: pathlib.Path,
            encoder: pathlib.Path | None = None) -> dict[str, Any]:
  """What summary.json holds: {dataset, arch, encoder: encoder_accuracy,
  runs: {kind: {layer: {normalized_error, step, feature_shape}}}} over the
  finished runs (arch None before any run started)."""
  runs: dict[str, dict[str, Any]] = {}
  arch = None
  for kind in COLUMNS:
    for layer in ROWS:
      workdir = root / KINDS[kind] / layer
      arch = arch or (_run_encoder(workdir) or {}).get("arch")
      metrics = final_metrics(dataset, workdir, layer)
      if metrics is None:
        continue
      shape = feature_shape(workdir)
      runs.setdefault(kind, {})[layer] = dict(
          normalized_error=metrics["normalized_error"], step=metrics["step"],
          feature_shape=list(shape) if shape else None)
  return dict(dataset=dataset, arch=arch,
              encoder=encoder_accuracy(root, encoder), runs=runs)


def _publish_encoder(encoder: pathlib.Path, publish: pathlib.Path) -> None:
  """A copy of the trained encoder in publish/encoder (unless it is that)."""
  target = publish / "encoder"
  if not (encoder / "metadata.json").exists() or (
      target.resolve() == encoder.resolve()):
    return
  if target.exists():
    shutil.rmtree(target)
  shutil.copytree(encoder, target)


def write(dataset: str, root: pathlib.Path, publish: pathlib.Path,
          encoder: pathlib.Path | None = None) -> None:
  publish.mkdir(parents=True, exist_ok=True)
  spec = presets.SMALL_DATASETS[dataset]
  encoder = encoder or root / "encoder" / "encoder"
  m = encoder_accuracy(root, encoder)
  preface = ""
  if len(m) == 3:
    preface = (f"Encoder: {100 * m['top1']:.2f}% top-1, {100 * m['top5']:.2f}%"
               f" top-5 on {m['num_images']:,} {spec['title']}"
               f" {spec['eval_split']} images.\n\n"
               "Normalized reconstruction error on the"
               f" {m['num_images']:,} {spec['eval_split']} images"
               " (lower is better):\n\n")
  _publish_encoder(encoder, publish)
  header, rows = main_table(dataset, root)
  write_table(publish, "main", header, rows, preface)
  chart = _curves(dataset, root,
                  [("inverter", l) for l in reproduction.LAYERS],
                  "Inverters of the trained encoder")
  if chart is not None:
    images.write_png(publish / "curves.png", chart)
  chart = baseline_curves(dataset, root)
  if chart is not None:
    images.write_png(publish / "curves_baselines.png", chart)
  else:  # None of an earlier, mistaken report may stay.
    (publish / "curves_baselines.png").unlink(missing_ok=True)
  chart = encoder_curve(dataset, root)
  if chart is not None:
    images.write_png(publish / "encoder_accuracy.png", chart)
  header, rows = flattening_table(dataset, root)
  if rows:
    write_table(publish, "flattening", header, rows)
  analysis = root / "analysis"
  studies = {study: analysis / study for study in reproduction.STUDIES}
  studies["baselines"] = root / "analysis_baselines" / "layers"
  for name, source in studies.items():
    if source.exists():
      target = publish / "analysis" / name
      if target.exists():
        shutil.rmtree(target)
      shutil.copytree(source, target)
  layers_figure = analysis / "layers" / "reconstructions.png"
  if layers_figure.exists():
    shutil.copy(layers_figure, publish / "reconstructions.png")
  ledger = published_ledger(root, publish)
  (publish / stages.LEDGER).write_text(json.dumps(ledger, indent=2))
  (publish / "stages.md").write_text(_stages_md(ledger))
  (publish / SUMMARY).write_text(json.dumps(
      summary(dataset, root, encoder), indent=2))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  write(FLAGS.dataset, pathlib.Path(FLAGS.root), pathlib.Path(FLAGS.publish),
        pathlib.Path(FLAGS.encoder) if FLAGS.encoder else None)
  print(f"Report written to {FLAGS.publish}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
