"""Study `layers`: how well each layer's features can be inverted.

The paper's table: the normalized reconstruction error of every given
inverter on the same images, and its figure: rows of images, columns the
original and the reconstruction from each layer (shallow to deep).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np
from etils import epath

from inverter.analysis import common, figures


def run(config: ml_collections.ConfigDict, inverters: list[common.Inverter],
        out_dir: epath.Path) -> dict[str, Any]:
  keep = int(config.num_figure_images)
  progress = common.Progress("layers", len(inverters) * common.num_batches(
      inverters[0], config))
  rows, entries, shown = [], [], {}
  originals = None
  for inv in inverters:
    tracker = common.ErrorTracker(inv, keep)
    kept_inputs = []
    for x, mask in common.batches(inv, config):
      recon = inv.decode(inv.encode(x))
      tracker.add(inv.target(x), recon, mask)
      if sum(len(k) for k in kept_inputs) < keep:
        kept_inputs.append(inv.to_rgb(x[mask]))
      progress.update(inv.label)
    result = tracker.result()
    entries.append(dict(common.describe(inv), **result))
    rows.append([inv.label, inv.tap, inv.step, result["normalized_error"],
                 result["mean_l2_error"], result["num_images"]])
    shown[inv.label] = tracker.shown
    if originals is None:
      originals = np.concatenate(kept_inputs)[:keep]
  figure = figures.grid(
      [[originals[i]] + [shown[inv.label][i] for inv in inverters]
       for i in range(min(keep, len(originals)))],
      col_titles=["original"] + [inv.label for inv in inverters])
  common.write_figure(out_dir, "reconstructions.png", figure)
  table = common.write_table(
      out_dir, ["inverter", "tap", "step", "normalized error",
                "mean L2 error", "images"], rows,
      title="Normalized reconstruction error per layer",
      notes=["Normalized error: mean ||x - x_hat|| / mean ||x_i - x_j|| over"
             f" pairs within batches of {config.batch_size} (1 = as far as a"
             " random other image)."])
  return dict(inverters=entries, figures=["reconstructions.png"],
              table=table)
