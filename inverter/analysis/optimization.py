"""Study `optimization`: the trained decoder against Mahendran & Vedaldi's
optimisation, and our hybrid of the two, on the same images.

For every inverter and study image: the decoder's reconstruction (one
forward pass), M&V's (gradient descent from noise under their priors, see
inverter/optimization.py) and the hybrid's (the same optimisation started
from the decoder's reconstruction). Reported per method: the normalized
reconstruction error (as everywhere), the relative feature error
||phi(x_hat) - phi(x)|| / ||phi(x)|| of the reconstruction resized to the
encoder's input, and the wall time per image on this machine, after
compilation, at the study's batch size, with its ratio to the decoder's.
`optimization.feature_weights` adds an M&V row per value of C (a sweep).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from inverter import optimization
from inverter.analysis import common, figures

NAMES = {"decoder": "decoder", "optimize": "M&V", "hybrid": "hybrid"}


def settings_from(config: ml_collections.ConfigDict) -> optimization.Settings:
  """The optimisation settings of config.optimization (M&V's defaults for
  every field it leaves at 0 or unset)."""
  opts = config.optimization
  fields = {}
  for name in ("iterations", "final_iterations", "feature_weight",
               "anchor_weight", "jitter", "seed"):
    if name in opts:
      fields[name] = opts[name]
  return optimization.Settings.from_config(fields)


def check(config: ml_collections.ConfigDict) -> list[str]:
  """Problems with config.optimization, found before any work."""
  problems = []
  methods = tuple(config.optimization.methods)
  unknown = [m for m in methods if m not in optimization.METHODS]
  if unknown or not methods:
    problems.append(f"config.optimization.methods={methods}: use some of"
                    f" {', '.join(optimization.METHODS)}.")
  try:
    settings_from(config)
  except optimization.OptimizationError as e:
    problems.append(f"config.optimization: {e}")
  if any(float(c) <= 0 for c in config.optimization.feature_weights):
    problems.append("config.optimization.feature_weights must be positive.")
  return problems


class _Method:
  """One row of the table: how features become images, and its tallies."""

  def __init__(self, inv: common.Inverter, name: str, label: str,
               settings: optimization.Settings | None, keep: int):
    self.name, self.label, self.settings = name, label, settings
    self.errors = common.ErrorTracker(inv, keep)
    self.feature_errors: list[np.ndarray] = []
    self.seconds, self.images = 0.0, 0

  def result(self) -> dict[str, Any]:
    out = self.errors.result()
    feature = np.concatenate(self.feature_errors)
    return dict(method=self.name, label=self.label,
                normalized_error=out["normalized_error"],
                mean_l2_error=out["mean_l2_error"],
                feature_error=float(feature.mean()),
                seconds_per_image=self.seconds / max(self.images, 1),
                num_images=out["num_images"],
                settings=None if self.settings is None
                else dataclasses.asdict(self.settings))


def _methods(inv: common.Inverter, config: ml_collections.ConfigDict
             ) -> list[_Method]:
  keep = int(config.num_figure_images)
  base = settings_from(config)
  out = []
  for name in config.optimization.methods:
    if name == "decoder":
      out.append(_Method(inv, name, NAMES[name], None, keep))
    elif name == "optimize":
      weights = [float(c) for c in config.optimization.feature_weights] or [
          base.weight_for(inv.layer)]
      for c in weights:
        label = NAMES[name] + (f" (C={c:g})"
                               if config.optimization.feature_weights else "")
        out.append(_Method(inv, name, label,
                           dataclasses.replace(base, feature_weight=c), keep))
    else:
      out.append(_Method(inv, name, NAMES[name],
                         dataclasses.replace(base, init="image"), keep))
  return out


def _timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


def run(config: ml_collections.ConfigDict, inverters: list[common.Inverter],
        out_dir: epath.Path) -> dict[str, Any]:
  progress = common.Progress("optimization", len(inverters) * (
      common.num_batches(inverters[0], config)))
  entries, rows, cells, titles = [], [], [], None
  for inv in inverters:
    methods = _methods(inv, config)
    kept_inputs = []
    for x, mask in common.batches(inv, config):
      features = inv.encode(x)
      target = inv.target(x)
      n = int(mask.sum())
      inv.decode(features)  # compiled and warm before it is timed
      decoded, decoder_seconds = _timed(inv.decode, features)
      for method in methods:
        if method.name == "decoder":
          recon, seconds = decoded, decoder_seconds
          at_input = inv.to_input_size(decoded)
          feature_error = np.asarray(optimization.relative_feature_error(
              inv.problem.features(inv.problem.encoder_params, at_input),
              features))
        else:
          start = (inv.to_input_size(decoded) if method.name == "hybrid"
                   else None)
          optimization.compiled(method.settings, inv.problem,
                                (inv.batch_size, *inv.feature_shape))
          got, seconds = _timed(inv.optimize, features, method.settings,
                                start)
          if method.name == "hybrid":
            seconds += decoder_seconds
          recon = inv.target(got["image"])
          feature_error = got["feature_error"]
        method.errors.add(target, recon, mask)
        method.feature_errors.append(feature_error[mask])
        method.seconds += seconds * n / len(x)
        method.images += n
      if sum(len(k) for k in kept_inputs) < config.num_figure_images:
        kept_inputs.append(inv.to_rgb(target[mask]))
      progress.update(inv.label)
    results = [m.result() for m in methods]
    decoder_time = next((r["seconds_per_image"] for r in results
                         if r["method"] == "decoder"), None)
    for r in results:
      r["time_over_decoder"] = (r["seconds_per_image"] / decoder_time
                                if decoder_time else None)
      rows.append([inv.label, r["label"], r["normalized_error"],
                   r["feature_error"], 1000 * r["seconds_per_image"],
                   ("" if r["time_over_decoder"] is None else
                    (r["time_over_decoder"],
                     f"{r['time_over_decoder']:.0f}x"))])
    entries.append(dict(common.describe(inv), methods=results))
    originals = np.concatenate(kept_inputs)
    for i in range(min(int(config.num_figure_images), len(originals))):
      cells.append([originals[i]] + [m.errors.shown[i] for m in methods])
    titles = ["input"] + [m.label for m in methods]
  row_titles = [f"{inv.label} #{i + 1}" for inv in inverters
                for i in range(min(int(config.num_figure_images),
                                   len(cells) // len(inverters)))]
  common.write_figure(out_dir, "optimization.png", figures.grid(
      cells, col_titles=titles, row_titles=row_titles))
  settings = settings_from(config)
  table = common.write_table(
      out_dir, ["inverter", "method", "normalized error", "feature error",
                "ms per image", "time / decoder's"], rows,
      title="The decoder against optimisation (M&V) and the hybrid",
      notes=[
          "Feature error: ||phi(x_hat) - phi(x)|| / ||phi(x)||, x_hat at the"
          " encoder's input size. Time: wall time per image on this"
          f" machine, after compilation, in batches of {config.batch_size};"
          " the hybrid's includes its decoder pass.",
          f"M&V: {settings.iterations} jittered + {settings.final_iterations}"
          " plain iterations from noise, C per layer as in"
          " inverter/optimization.py; hybrid: the same from the decoder's"
          f" output, anchor weight {settings.anchor_weight:g}."])
  return dict(inverters=entries, figures=["optimization.png"], table=table,
              settings=dataclasses.asdict(settings))
