"""Study `topk`: how much of fc8's information is in its few largest entries.

The fc8 inverter (trained on all activations) reconstructs from
  * all activations,
  * the top-k activations alone (the rest set to 0), and
  * all but the top-k (those set to 0),
k = config.topk.k (5 in the paper). If an fc8 inverter trained on top-k-only
input is given too (configs/fc8_top5.py, feature_transform='top5'), it
reconstructs from the same top-k-only input, and the table says how much
better it does than the all-activations inverter on that input.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from inverter.analysis import common, figures, perturb

LAYER = "fc8"


def run(config: ml_collections.ConfigDict, inverters: list[common.Inverter],
        out_dir: epath.Path) -> dict[str, Any]:
  k = int(config.topk.k)
  full = common.require(inverters, "topk", LAYER)
  special = common.find(inverters, LAYER, f"top{k}")
  notes = []
  if special is None:
    missing = (f"No fc8 inverter trained on top-{k}-only input was given, so"
               " there is no comparison with one. Train it with "
               + common.train_command(LAYER, f"top{k}")
               + " and add its workdir to --config.inverters.")
    logging.warning(missing)
    notes.append(missing)
  elif (special.config.encoder.to_dict() != full.config.encoder.to_dict()
        or special.output_size != full.output_size):
    raise ValueError(
        f"{special.path} and {full.path} invert different encoders or"
        " decode to different sizes; the top-k comparison needs the same"
        " encoder (and weights) and output size for both.")
  conditions = [("all activations", full, "none"),
                (f"top-{k} only", full, f"top:{k}"),
                (f"all but top-{k}", full, f"drop_top:{k}")]
  if special is not None:
    conditions.append((f"top-{k} only", special, f"top:{k}"))
  keep = int(config.num_figure_images)
  trackers = [common.ErrorTracker(inv, keep) for _, inv, _ in conditions]
  progress = common.Progress("topk", common.num_batches(full, config))
  kept_inputs, key = [], jax.random.key(config.seed)  # (no random specs)
  for x, mask in common.batches(full, config):
    raw = full.encode(x, raw=True)
    target = full.target(x)
    for tracker, (_, inv, spec) in zip(trackers, conditions):
      feats = np.asarray(perturb.jitted(spec)(raw, key))
      tracker.add(target, inv.decode(feats), mask)
    if sum(len(i) for i in kept_inputs) < keep:
      kept_inputs.append(full.to_rgb(x[mask]))
    progress.update(full.label)
  inputs = np.concatenate(kept_inputs)[:keep]
  results = [dict(input=name, inverter=inv.label, **t.result())
             for t, (name, inv, _) in zip(trackers, conditions)]
  rows = [[r["input"], r["inverter"], r["normalized_error"],
           r["mean_l2_error"]] for r in results]
  out: dict[str, Any] = dict(k=k, inverters=[common.describe(full)] + (
      [common.describe(special)] if special else []), results=results)
  if special is not None:
    general = results[1]["normalized_error"]
    trained = results[3]["normalized_error"]
    out["top_k_inverter_improvement"] = dict(
        error_all_activations_inverter=general,
        error_top_k_inverter=trained,
        absolute=general - trained,
        relative=(general - trained) / general)
    change = 100 * abs(general - trained) / general
    verdict = (f"{change:.1f}% lower (better)" if trained < general else
               f"{change:.1f}% higher (worse)" if trained > general else
               "the same")
    notes.append(
        f"On top-{k}-only input the inverter trained on it has error"
        f" {trained:.4f} against {general:.4f} for the all-activations"
        f" inverter: {verdict}.")
  titles = ["original"] + [f"{name} ({inv.label})"
                           for name, inv, _ in conditions]
  common.write_figure(out_dir, "topk.png", figures.grid(
      [[inputs[i]] + [t.shown[i] for t in trackers]
       for i in range(len(inputs))], col_titles=titles))
  out["figures"] = ["topk.png"]
  out["table"] = common.write_table(
      out_dir, ["input", "inverter", "normalized error", "mean L2 error"],
      rows, title=f"fc8: reconstruction from the top-{k} activations",
      notes=notes)
  out["notes"] = notes
  return out
