"""Study `interpolate`: decode linear interpolations between the features of
image pairs, per layer.

Pairs are study images (0, 1), (2, 3), ...; each path has
config.interpolate.steps points from one image's features to the other's.
Besides the figures, results.json measures how evenly each decoded path moves:
the largest step between consecutive decoded images as a fraction of the
whole path length (1 / (steps - 1) for perfectly even steps, near 1 for a
sudden switch from one image to the other).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np
from etils import epath

from inverter.analysis import common, figures


def path_evenness(decoded: np.ndarray) -> float:
  """Largest consecutive-step distance / total path length, [steps, ...]."""
  flat = decoded.reshape(len(decoded), -1).astype(np.float64)
  steps = np.linalg.norm(np.diff(flat, axis=0), axis=1)
  total = steps.sum()
  return float(steps.max() / total) if total > 0 else 0.0


def run(config: ml_collections.ConfigDict, inverters: list[common.Inverter],
        out_dir: epath.Path) -> dict[str, Any]:
  num_pairs = int(config.interpolate.num_pairs)
  steps = int(config.interpolate.steps)
  if steps < 2 or num_pairs < 1:
    raise ValueError("config.interpolate needs steps >= 2 and num_pairs >= 1;"
                     f" got steps={steps}, num_pairs={num_pairs}.")
  alphas = np.linspace(0.0, 1.0, steps)
  progress = common.Progress("interpolate", len(inverters), "inverters")
  entries, rows, names, summary = [], [], [], []
  for inv in inverters:
    x = common.first_images(inv, config, 2 * num_pairs)
    inputs = inv.to_rgb(x)
    feats = inv.encode(x)
    a, b = feats[0::2], feats[1::2]
    # [pairs * steps, ...]: pair-major, alpha-minor.
    mixed = ((1 - alphas)[None, :, None] * a.reshape(num_pairs, 1, -1)
             + alphas[None, :, None] * b.reshape(num_pairs, 1, -1))
    decoded = inv.decode(mixed.reshape(num_pairs * steps, *inv.feature_shape)
                         .astype(np.float32))
    decoded = decoded.reshape(num_pairs, steps, *decoded.shape[1:])
    evenness = [path_evenness(d) for d in decoded]
    rgb = inv.to_rgb(decoded)
    cells = [[inputs[2 * p]] + list(rgb[p]) + [inputs[2 * p + 1]]
             for p in range(num_pairs)]
    name = f"interpolate_{inv.label}.png"
    common.write_figure(out_dir, name, figures.grid(
        cells, col_titles=["image A"] + [f"{t:.2f}" for t in alphas]
        + ["image B"], row_titles=[f"pair {p}" for p in range(num_pairs)]))
    names.append(name)
    summary.append(cells[0])
    entries.append(dict(common.describe(inv), largest_step_fraction=evenness,
                        mean_largest_step_fraction=float(np.mean(evenness))))
    rows.append([inv.label, float(np.mean(evenness)), 1.0 / (steps - 1)])
    progress.update(inv.label)
  common.write_figure(out_dir, "interpolations.png", figures.grid(
      summary, col_titles=["image A"] + [f"{t:.2f}" for t in alphas]
      + ["image B"], row_titles=[inv.label for inv in inverters]))
  table = common.write_table(
      out_dir, ["inverter", "largest step / path length", "even steps"], rows,
      title=f"Decoded interpolations ({num_pairs} pairs, {steps} steps)",
      notes=["Largest distance between consecutive decoded images as a"
             " fraction of the decoded path's length, mean over pairs: the"
             " even-steps value means the images change smoothly, values"
             " near 1 an abrupt switch."])
  return dict(alphas=alphas, pairs=[[2 * p, 2 * p + 1]
                                    for p in range(num_pairs)],
              inverters=entries, figures=["interpolations.png"] + names,
              table=table)
