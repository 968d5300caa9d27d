"""Study `sample`: decode random samples from a fitted feature distribution.

For each selected inverter, a distribution is fitted to its layer's features
over the study images (config.sample.num_fit_images of them) and
config.sample.num_samples draws are decoded:
  'marginal' (default): each dimension independently from its empirical
      marginal (the value of that dimension in a random fit image);
  'gaussian': a Gaussian with the features' full sample covariance, drawn as
      mean + centred_features^T z / sqrt(N - 1) with z ~ N(0, I_N) (exact for
      the sample covariance, without forming the D x D matrix); truncated at
      0 (negative draws set to 0, as the ReLU does) where every fitted
      feature is non-negative (post-ReLU layers).
For fully connected layers each sample is also pushed through the rest of the
encoder, and its top-5 classes are printed under its image and to stdout.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np
from etils import epath

from inverter.analysis import classes, common, figures

METHODS = ("marginal", "gaussian")


def fit_and_sample(features: np.ndarray, method: str, num_samples: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, bool]:
  """[N, ...] features -> ([num_samples, ...] samples, truncated at 0?)."""
  if method not in METHODS:
    raise ValueError(f"config.sample.method={method!r}; use one of"
                     f" {', '.join(METHODS)}.")
  n = len(features)
  flat = features.reshape(n, -1).astype(np.float64)
  nonneg = bool(flat.min() >= 0)
  if method == "marginal":
    rows = rng.integers(n, size=(num_samples, flat.shape[1]))
    out = flat[rows, np.arange(flat.shape[1])[None, :]]
  else:
    if n < 2:
      raise ValueError("A Gaussian fit needs at least 2 images.")
    mean = flat.mean(axis=0)
    z = rng.standard_normal((num_samples, n))
    out = mean + z @ (flat - mean) / np.sqrt(n - 1)
    if nonneg:
      out = np.maximum(out, 0.0)
  return out.reshape(num_samples, *features.shape[1:]).astype(np.float32), (
      method == "gaussian" and nonneg)


def _fit_features(inv: common.Inverter, config, limit: int,
                  progress: common.Progress) -> np.ndarray:
  feats, have = [], 0
  for x, mask in common.batches(inv, config):
    f = inv.encode(x)[mask]
    feats.append(f[:limit - have])
    have += len(feats[-1])
    progress.update(inv.label)
    if have >= limit:
      break
  return np.concatenate(feats)


def run(config: ml_collections.ConfigDict, inverters: list[common.Inverter],
        out_dir: epath.Path) -> dict[str, Any]:
  opts = config.sample
  chosen = inverters
  if opts.layers:
    chosen = []
    for layer in opts.layers:
      chosen.append(common.require(inverters, "sample", layer))
  limit = int(opts.num_fit_images) if opts.num_fit_images > 0 else (
      int(config.num_images) if config.num_images > 0 else 10 ** 9)
  progress = common.Progress("sample", len(chosen) * common.num_batches(
      chosen[0], config))
  rng = np.random.default_rng(config.seed)
  entries, rows, cells, captions = [], [], [], []
  for inv in chosen:
    fit = _fit_features(inv, config, limit, progress)
    samples, truncated = fit_and_sample(fit, opts.method,
                                        int(opts.num_samples), rng)
    images_ = inv.invert(samples)
    flat_fit = fit.reshape(len(fit), -1)
    flat_s = samples.reshape(len(samples), -1)
    entry = dict(common.describe(inv), method=opts.method,
                 num_fit_images=len(fit), feature_dim=flat_fit.shape[1],
                 truncated_at_zero=truncated,
                 zero_fraction_fit=float((flat_fit == 0).mean()),
                 zero_fraction_samples=float((flat_s == 0).mean()),
                 mean_norm_fit=float(np.linalg.norm(flat_fit, axis=1).mean()),
                 mean_norm_samples=float(
                     np.linalg.norm(flat_s, axis=1).mean()))
    row_captions = [[] for _ in images_]
    if classes.has_classes(inv):
      names = classes.class_names(inv, config.data.source)
      top5 = classes.top_k(classes.probabilities(inv, samples), names, 5)
      entry["top5"] = top5
      entry["class_names"] = ("encoder's class names" if names else
                              "class indices (no names known for this"
                              " encoder)")
      row_captions = [[f"{c['probability']:.2f} {c['name']}" for c in t]
                      for t in top5]
      print(f"sample: top-5 classes of {inv.label} samples:")
      for i, t in enumerate(top5):
        print(f"  sample {i}: " + ", ".join(
            f"{c['name']} ({c['probability']:.3f})" for c in t))
    entries.append(entry)
    cells.append(list(images_))
    captions.append(row_captions)
    rows.append([inv.label, opts.method, len(fit), flat_fit.shape[1],
                 entry["zero_fraction_fit"], entry["zero_fraction_samples"],
                 entry["mean_norm_samples"] / max(entry["mean_norm_fit"],
                                                  1e-12)])
  common.write_figure(out_dir, "samples.png", figures.grid(
      cells, col_titles=[f"sample {i}" for i in range(int(opts.num_samples))],
      row_titles=[inv.label for inv in chosen], captions=captions))
  table = common.write_table(
      out_dir, ["inverter", "method", "fit images", "feature dim",
                "zeros (fit)", "zeros (samples)", "norm samples / fit"], rows,
      title="Images decoded from sampled features",
      notes=["'marginal': every dimension drawn independently from its"
             " empirical distribution; 'gaussian': full covariance, negative"
             " draws set to 0 for non-negative (post-ReLU) features."])
  return dict(method=opts.method, inverters=entries, figures=["samples.png"],
              table=table)
