"""The paper's findings on a small data set, end to end, as resumable stages.

`build(plan)` lists every stage of one reproduction (run them with
`python -m inverter.experiments`, see __main__.py). A data set is an
argument, not a copy: cifar10 and tiny_imagenet (inverter.presets.
SMALL_DATASETS) take the same stages, with `configs/encoders/<data set>.py`
and the inverter preset `<data set>`.

Stages, in order (each an ordinary command line):

1. `encoder`: the reduced encoder (AlexNet-shaped unless `arch` says
   otherwise) trained on the data set as a classifier, exported to
   ROOT/encoder/encoder (skipped when --encoder names an encoder trained
   before, e.g. a published one).
2. `inverter_<layer>` for conv1..conv5, fc6, fc7 (where the family has
   it), fc8, prob, and `inverter_fc8_top5`: decoders for the frozen
   trained encoder (`configs/<layer>.py:<data set>,encoder=ENCODER`).
3. `analysis_<study>`: the studies (`python -m inverter.analysis`) on the
   trained-encoder inverters, on the same evaluation images (the
   `optimization` study on the first 64 of them).
4. `autoencoder_<layer>` (conv2, conv5, fc6, fc8): the paper's autoencoder,
   the encoder fine-tuned with the decoder from its trained weights;
   `scratch_<layer>`: the same from random initialisation; `random_<layer>`:
   a decoder for the frozen, untrained encoder (what the architecture alone
   keeps).
5. `analysis_baselines`: the `layers` study over all four kinds of decoder
   at the baseline layers, their reconstructions side by side.
6. `report`: tables, curves and figures in --publish (default
   docs/results/<data set>, or docs/results/architectures/<arch> for
   another family), with the commands, wall times and git commits
   of every stage.

The encoder is caffenet-shaped unless `arch` names another family
(`presets.SMALL_ENCODER_ARCHS`): then every stage uses that reduced network,
the inverters cover the layers it has, and `studies`, `baseline_kinds`,
`baseline_layers` and `inverter_steps` can trim the plan to a budget
(docs/results/architectures).

A stage whose outputs exist is skipped; an interrupted one is run again and
its training resumes exactly. Every run uses seed 0 (config.seed and
encoder.init_seed); evaluation uses the whole evaluation split, the
analysis `analysis_images` of its images, the same for every row.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from inverter import errors, presets
from inverter.experiments import stages as stages_lib
from inverter.models import encoders

DATASETS = tuple(presets.SMALL_DATASETS)
LAYERS = encoders.LAYERS
BASELINE_LAYERS = ("conv2", "conv5", "fc6", "fc8")
STUDIES = ("layers", "perturb", "interpolate", "sample", "topk",
           "color_position", "optimization")
# Studies run on fewer images than `analysis_images` (their config's
# default; the first images of the same ones): the optimisation costs
# hundreds of encoder passes per image.
FEWER_IMAGES = ("optimization",)
# Workdir groups under ROOT, one per kind of decoder (report column order).
KINDS = {
    "inverter": "inverters",       # frozen trained encoder
    "autoencoder": "autoencoders",  # encoder fine-tuned from trained weights
    "scratch": "scratch",          # encoder trained from random init
    "random": "random_encoder",    # frozen random encoder
}
BASELINE_KINDS = ("autoencoder", "scratch", "random")


class PlanError(errors.UserError, ValueError):
  """A plan that cannot run as asked: an unknown data set, family, layer,
  study or baseline, a list that repeats an entry, baselines at a layer
  without its inverter, an encoder of another family, non-positive steps,
  or a run already trained for a different number of steps."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """One reproduction: which data set and encoder family, from where, where
  it writes, and which of the stages it runs (all by default)."""
  dataset: str
  root: pathlib.Path
  source: str  # data.source: a TFDS name or folder:PATH
  data_dir: str | None = None  # TFDS data_dir
  # A trained encoder to use instead of the `encoder` stage's.
  encoder: pathlib.Path | None = None
  publish: pathlib.Path | None = None
  analysis_images: int = 1000
  # The encoder's family (presets.SMALL_ENCODER_ARCHS).
  arch: str = "caffenet"
  # Inverted layers; None: every layer `arch` has, then fc8_top5.
  layers: tuple[str, ...] | None = None
  studies: tuple[str, ...] = STUDIES
  baseline_kinds: tuple[str, ...] = BASELINE_KINDS
  baseline_layers: tuple[str, ...] = BASELINE_LAYERS
  # Training steps of every decoder; None: the preset's.
  inverter_steps: int | None = None

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise PlanError(f"Unknown data set {self.dataset!r}; one of"
                      f" {', '.join(DATASETS)}.")
    try:
      presets.check_small_encoder_arch(self.arch)
    except ValueError as e:
      raise PlanError(str(e)) from None
    allowed = {"layers": (*encoders.layers_of(self.arch), "fc8_top5"),
               "studies": STUDIES, "baseline_kinds": BASELINE_KINDS,
               "baseline_layers": encoders.layers_of(self.arch)}
    for field, known in allowed.items():
      values = getattr(self, field) or ()
      unknown = [v for v in values if v not in known]
      if unknown:
        raise PlanError(f"{field}: {unknown} not among {', '.join(known)}"
                        f" (arch {self.arch}).")
      repeated = sorted({v for v in values if values.count(v) > 1})
      if repeated:
        raise PlanError(f"{field}: {repeated} given more than once.")
    if self.layers is not None and not self.layers:
      raise PlanError("layers is empty; name at least one layer to invert.")
    orphans = [l for l in self.baseline_layers
               if l not in self.inverted_layers]
    if self.baseline_kinds and orphans:
      raise PlanError(f"baseline_layers {orphans} are compared with their"
                      " inverters; add them to layers.")
    if self.inverter_steps is not None and self.inverter_steps <= 0:
      raise PlanError(f"inverter_steps must be positive, got"
                      f" {self.inverter_steps}.")
    metadata = self.encoder / "metadata.json" if self.encoder else None
    if metadata is not None and metadata.exists():
      arch = json.loads(metadata.read_text()).get("architecture", {}).get(
          "arch")
      if arch != self.arch:
        raise PlanError(f"The encoder {self.encoder} is a {arch}, the plan's"
                        f" family is {self.arch}; pass --arch={arch} or"
                        " another encoder.")

  @property
  def inverted_layers(self) -> tuple[str, ...]:
    return self.layers if self.layers is not None else (
        *encoders.layers_of(self.arch), "fc8_top5")

  @property
  def arch_arg(self) -> str:
    """',arch=ARCH' for a config argument, or '' for caffenet (so the
    published caffenet commands stay as they were)."""
    return "" if self.arch == "caffenet" else f",arch={self.arch}"

  @property
  def encoder_dir(self) -> pathlib.Path:
    return self.encoder or self.root / "encoder" / "encoder"

  @property
  def publish_dir(self) -> pathlib.Path:
    if self.publish:
      return self.publish
    results = stages_lib.REPO_ROOT / "docs" / "results"
    return (results / self.dataset if self.arch == "caffenet"
            else results / "architectures" / self.arch)


def num_train_steps(dataset: str, layer: str) -> int:
  """The training steps of a `layer` inverter of the `dataset` preset."""
  layer = "fc8" if layer == "fc8_top5" else layer
  return presets.get_config(layer, dataset).num_train_steps


def planned_steps(workdir: pathlib.Path) -> int | None:
  """The num_train_steps a run was started with (its config.json), or None
  before it started."""
  config = workdir / "config.json"
  if not config.exists():
    return None
  return json.loads(config.read_text())["config"].get("num_train_steps")


def steps_done(workdir: pathlib.Path, steps: int) -> bool:
  """Whether the run in `workdir` has evaluated its final step.

  Raises PlanError for a run started with another number of steps: resuming
  it would continue under a different learning-rate schedule.
  """
  planned = planned_steps(workdir)
  if planned is not None and planned != steps:
    raise PlanError(
        f"{workdir} was started with {planned} training steps, this plan"
        f" asks for {steps}; give the same --inverter_steps or another"
        " --root.")
  metrics = workdir / "eval" / "metrics.json"
  return metrics.exists() and json.loads(metrics.read_text())["step"] >= steps


def build(plan: Plan) -> list[stages_lib.Stage]:
  """Every stage of the reproduction, in order."""
  py = stages_lib.PYTHON
  root, dataset, source = plan.root, plan.dataset, plan.source
  data_flags = ([f"--config.data.data_dir={plan.data_dir}"]
                if plan.data_dir else [])
  encoder_dir = plan.encoder_dir
  out = [stages_lib.Stage(
      "encoder",
      (py, "-m", "inverter.main",
       f"--config=configs/encoders/{dataset}.py:source={source}"
       f"{plan.arch_arg}",
       f"--workdir={root / 'encoder'}", *data_flags),
      done=lambda: (encoder_dir / "metadata.json").exists(),
      description=f"{dataset} encoder trained as a classifier")]

  steps_flags = ([f"--config.num_train_steps={plan.inverter_steps}"]
                 if plan.inverter_steps else [])

  def inverter_stage(kind: str, layer: str, config: str, *extra: str):
    workdir = root / KINDS[kind] / layer
    steps = plan.inverter_steps or num_train_steps(dataset, layer)
    return stages_lib.Stage(
        f"{kind}_{layer}",
        (py, "-m", "inverter.main", f"--config={config}",
         f"--workdir={workdir}", *data_flags, *extra, *steps_flags),
        done=lambda: steps_done(workdir, steps))

  # With encoder=DIR the network comes from the encoder's metadata.
  trained = f"encoder={encoder_dir},source={source}"
  untrained = f"{dataset}{plan.arch_arg},source={source}"
  for layer in plan.inverted_layers:
    out.append(inverter_stage("inverter", layer,
                              f"configs/{layer}.py:{dataset},{trained}"))
  analysis_dir = root / "analysis"
  inverters = root / KINDS["inverter"] / "*"
  for study in plan.studies:
    images = ([] if study in FEWER_IMAGES
              else [f"--config.num_images={plan.analysis_images}"])
    out.append(stages_lib.Stage(
        f"analysis_{study}",
        (py, "-m", "inverter.analysis", f"--config=configs/analysis.py:{study}",
         f"--config.inverters={inverters}", *images,
         f"--workdir={analysis_dir}"),
        done=lambda s=study: (analysis_dir / s / "results.json").exists()))
  kinds = [k for k in KINDS if k in plan.baseline_kinds]
  for kind in kinds:
    for layer in plan.baseline_layers:
      if kind == "autoencoder":
        out.append(inverter_stage(kind, layer,
                                  f"configs/{layer}.py:{dataset},{trained}",
                                  "--config.train_encoder=True"))
      elif kind == "scratch":
        out.append(inverter_stage(kind, layer,
                                  f"configs/{layer}.py:{untrained}",
                                  "--config.train_encoder=True"))
      else:
        out.append(inverter_stage(kind, layer,
                                  f"configs/{layer}.py:{untrained}"))
  if kinds:
    baselines = [str(root / KINDS["inverter"] / layer)
                 for layer in plan.baseline_layers] + [
                     str(root / KINDS[kind] / "*") for kind in kinds]
    baselines_dir = root / "analysis_baselines"
    out.append(stages_lib.Stage(
        "analysis_baselines",
        (py, "-m", "inverter.analysis", "--config=configs/analysis.py:layers",
         f"--config.inverters={','.join(baselines)}",
         f"--config.num_images={plan.analysis_images}",
         f"--workdir={baselines_dir}"),
        done=lambda: (baselines_dir / "layers" / "results.json").exists()))
  out.append(stages_lib.Stage(
      "report",
      (py, "-m", "inverter.experiments.report", f"--dataset={dataset}",
       f"--root={root}", f"--encoder={encoder_dir}",
       f"--publish={plan.publish_dir}"),
      done=None,  # Cheap; always rewritten from what exists.
      description="tables and figures"))
  return out
