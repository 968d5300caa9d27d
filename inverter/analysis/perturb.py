"""Study `perturb`: reconstruction from perturbed features, per layer.

As in the paper: binarization (entries > 0 set to one constant, the rest 0,
L2 norm kept) and 50% dropout (a random half set to 0, the rest rescaled to
keep the L2 norm); also additive Gaussian noise at a few SNRs and k-bit
quantization (config.perturb.perturbations, see inverter/perturbations.py).
Each is compared with the unperturbed error on the same images. Each
inverter's entry also records `active_fraction`, the mean fraction of feature
entries above 0: binarization keeps only that on/off pattern, so a layer whose
entries are nearly all positive (a global average of ReLU maps, say) has
little left to carry once binarized, whatever its depth.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from inverter import perturbations
from inverter.analysis import common, figures

NONE = "none"


@functools.lru_cache(maxsize=None)
def jitted(spec: str):
  """`perturbations.apply` for one spec as a single compiled function."""
  return jax.jit(functools.partial(perturbations.apply, spec))


def feature_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
  """Per example ||after - before|| / ||before|| (0 where before is 0)."""
  b = before.reshape(len(before), -1).astype(np.float64)
  a = after.reshape(len(after), -1).astype(np.float64)
  norm = np.linalg.norm(b, axis=1)
  return np.where(norm > 0, np.linalg.norm(a - b, axis=1) /
                  np.where(norm > 0, norm, 1), 0.0)


def active_fraction(x: np.ndarray) -> np.ndarray:
  """Per example, the fraction of feature entries above 0."""
  return (np.asarray(x).reshape(len(x), -1) > 0).mean(axis=1)


def run(config: ml_collections.ConfigDict, inverters: list[common.Inverter],
        out_dir: epath.Path) -> dict[str, Any]:
  specs = [NONE] + [s for s in config.perturb.perturbations if s != NONE]
  for spec in specs:
    perturbations.parse(spec)  # Fail on a typo before any work.
  keep = int(config.num_figure_images)
  progress = common.Progress("perturb", len(inverters) * common.num_batches(
      inverters[0], config))
  base_key = jax.random.key(config.seed)
  entries, rows, per_inverter_figs = [], [], []
  summary_rows, originals = [], None
  for inv in inverters:
    trackers = {s: common.ErrorTracker(inv, keep) for s in specs}
    change_sum = {s: 0.0 for s in specs}
    count, active_sum, kept_inputs = 0, 0.0, []
    for b, (x, mask) in enumerate(common.batches(inv, config)):
      feats = inv.encode(x)
      active_sum += float(active_fraction(feats)[mask].sum())
      target = inv.target(x)
      for i, spec in enumerate(specs):
        key = jax.random.fold_in(jax.random.fold_in(base_key, i), b)
        perturbed = np.asarray(jitted(spec)(feats, key))
        change_sum[spec] += float(feature_change(feats, perturbed)[mask].sum())
        trackers[spec].add(target, inv.decode(perturbed), mask)
      count += int(mask.sum())
      if sum(len(k) for k in kept_inputs) < keep:
        kept_inputs.append(inv.to_rgb(x[mask]))
      progress.update(inv.label)
    inputs = np.concatenate(kept_inputs)[:keep]
    originals = inputs if originals is None else originals
    results = {s: trackers[s].result() for s in specs}
    base = results[NONE]["normalized_error"]
    for spec in specs:
      results[spec]["relative_to_unperturbed"] = (
          results[spec]["normalized_error"] / base)
      results[spec]["mean_relative_feature_change"] = change_sum[spec] / count
    active = active_sum / count
    entries.append(dict(common.describe(inv), perturbations=results,
                        active_fraction=active))
    rows.append([inv.label] + [
        (results[s]["normalized_error"],
         f"{results[s]['normalized_error']:.4f}" + (
             f" (x{results[s]['relative_to_unperturbed']:.2f})"
             if s != NONE else "")) for s in specs] + [active])
    name = f"perturb_{inv.label}.png"
    common.write_figure(out_dir, name, figures.grid(
        [[inputs[i]] + [trackers[s].shown[i] for s in specs]
         for i in range(len(inputs))],
        col_titles=["original"] + [perturbations.describe(s) for s in specs],
        row_titles=[inv.label] * len(inputs)))
    per_inverter_figs.append(name)
    summary_rows.append([trackers[s].shown[0] for s in specs])
  common.write_figure(out_dir, "perturbations.png", figures.grid(
      [[originals[0]] + row for row in summary_rows],
      col_titles=["original"] + [perturbations.describe(s) for s in specs],
      row_titles=[inv.label for inv in inverters]))
  table = common.write_table(
      out_dir, ["inverter"] + [perturbations.describe(s) for s in specs]
      + ["entries > 0"], rows,
      title="Normalized reconstruction error from perturbed features",
      notes=["In brackets: the error relative to the unperturbed features."
             " Binarization and dropout keep each feature vector's L2 norm;"
             " noise is additive Gaussian at the given signal-to-noise ratio;"
             " k-bit uses 2^k levels between each vector's min and max.",
             "Entries > 0: the mean fraction of feature entries above 0,"
             " the on/off pattern that is all binarization keeps."])
  return dict(perturbations=specs, inverters=entries,
              figures=["perturbations.png"] + per_inverter_figs, table=table)
