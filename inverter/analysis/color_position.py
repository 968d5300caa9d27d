"""Study `color_position`: what each layer keeps of colour and layout versus
detail, and whether reconstructions move with the input.

Colour and layout: the normalized error between the reconstruction and the
original after both are strongly blurred (area-downsampled to
config.color_position.blur_size pixels square), next to the full-resolution
error, which also counts the detail. A layer that keeps colours and rough
positions but loses detail has a small blurred error and a large full one.

Position: the first config.color_position.num_images images are translated
(reflection-padded) by each configured fraction of the input size, left,
right, up and down; the shift of the reconstruction relative to the
reconstruction of the untranslated image is estimated by phase correlation
and compared with the input's shift. The follow ratio is the least-squares
slope of estimated on true shift (1: the reconstruction moves with the input,
0: it does not move); the shift error is the mean distance between the two,
in input pixels. The same estimator applied to the inputs themselves is
reported as its own accuracy.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from inverter.analysis import common, figures


@functools.partial(jax.jit, static_argnums=1)
def _resize(images: jax.Array, size: int) -> jax.Array:
  shape = (images.shape[0], size, size, images.shape[3])
  return jax.image.resize(images, shape, "linear", antialias=True)


def blur(images: np.ndarray, size: int) -> np.ndarray:
  """[N, H, W, 3] -> [N, size, size, 3], antialiased (area-like)
  downsampling."""
  return np.asarray(_resize(jnp.asarray(images, jnp.float32), size))


def translate(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Moves the content of [N, H, W, C] images down by dy and right by dx
  pixels, filling the uncovered border by reflection."""
  m = max(abs(dy), abs(dx))
  if m == 0:
    return images.copy()
  h, w = images.shape[1:3]
  if m >= min(h, w):
    raise ValueError(f"A shift of {m} pixels is too large for {h}x{w} images;"
                     " lower config.color_position.shifts.")
  padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)), mode="reflect")
  return padded[:, m - dy:m - dy + h, m - dx:m - dx + w]


def estimate_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
  """(dy, dx) such that image b looks like image a moved by (dy, dx), by
  phase correlation of the Hann-windowed grey images ([H, W, 3] each)."""
  h, w = a.shape[:2]
  window = np.outer(np.hanning(h), np.hanning(w))
  ga = a.astype(np.float64).mean(-1)
  gb = b.astype(np.float64).mean(-1)
  fa = np.fft.fft2((ga - ga.mean()) * window)
  fb = np.fft.fft2((gb - gb.mean()) * window)
  cross = fb * np.conj(fa)
  corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-12)).real
  dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
  return (int(dy - h) if dy > h // 2 else int(dy),
          int(dx - w) if dx > w // 2 else int(dx))


def shift_list(fractions, size: int) -> list[tuple[int, int]]:
  shifts = []
  for f in fractions:
    s = max(1, int(round(float(f) * size)))
    shifts += [(0, s), (0, -s), (s, 0), (-s, 0)]
  return shifts


def _follow(true: np.ndarray, est: np.ndarray) -> dict[str, float]:
  return dict(follow_ratio=float((est * true).sum() / (true * true).sum()),
              shift_error_px=float(np.linalg.norm(est - true, axis=1).mean()))


def _position(inv: common.Inverter, x: np.ndarray, fractions
              ) -> tuple[dict[str, Any], list[np.ndarray]]:
  shifts = shift_list(fractions, inv.input_size)
  base = inv.decode(inv.encode(x))
  scale = inv.input_size / inv.output_size
  true, est, est_input, example = [], [], [], []
  for dy, dx in shifts:
    moved = translate(x, dy, dx)
    recon = inv.decode(inv.encode(moved))
    for i in range(len(x)):
      ry, rx = estimate_shift(base[i], recon[i])
      est.append((ry * scale, rx * scale))
      est_input.append(estimate_shift(x[i], moved[i]))
      true.append((dy, dx))
    if (dy, dx) == shifts[0]:
      example = [inv.to_rgb(moved[0]), inv.to_rgb(recon[0])]
  true_a, est_a = np.asarray(true, float), np.asarray(est, float)
  result = dict(shifts_px=shifts, num_images=len(x),
                **_follow(true_a, est_a),
                estimator_on_inputs=_follow(true_a, np.asarray(est_input,
                                                               float)))
  return result, example


def run(config: ml_collections.ConfigDict, inverters: list[common.Inverter],
        out_dir: epath.Path) -> dict[str, Any]:
  opts = config.color_position
  size = int(opts.blur_size)
  progress = common.Progress("color_position", len(inverters) * (
      common.num_batches(inverters[0], config) + 1))
  entries, rows, cells = [], [], []
  for inv in inverters:
    full, blurred = common.ErrorTracker(inv, 1), common.ErrorTracker(inv, 1)
    first = None
    for x, mask in common.batches(inv, config):
      recon = inv.decode(inv.encode(x))
      target = inv.target(x)
      full.add(target, recon, mask)
      blurred.add(blur(target, size), blur(recon, size), mask)
      if first is None:
        first = (inv.to_rgb(target[0]), inv.to_rgb(blur(target[:1], size)[0]))
      progress.update(inv.label)
    position, example = _position(
        inv, common.first_images(inv, config, int(opts.num_images)),
        opts.shifts)
    progress.update(inv.label)
    f, b = full.result(), blurred.result()
    entries.append(dict(common.describe(inv), full=f, blurred=b,
                        blurred_over_full=b["normalized_error"]
                        / f["normalized_error"], position=position))
    rows.append([inv.label, f["normalized_error"], b["normalized_error"],
                 b["normalized_error"] / f["normalized_error"],
                 position["follow_ratio"], position["shift_error_px"]])
    cells.append([first[0], full.shown[0], first[1], blurred.shown[0]]
                 + example)
  dy, dx = shift_list(opts.shifts, inverters[0].input_size)[0]
  common.write_figure(out_dir, "color_position.png", figures.grid(
      cells, col_titles=["original", "reconstruction", "blurred original",
                         "blurred recon.", f"moved ({dy},{dx})",
                         "its recon."],
      row_titles=[inv.label for inv in inverters]))
  table = common.write_table(
      out_dir, ["inverter", "full error", f"blurred error ({size}px)",
                "blurred / full", "shift follow ratio", "shift error (px)"],
      rows, title="Colour and layout versus detail; following translations",
      notes=[f"Blurred: both images area-downsampled to {size}x{size}; the"
             " blurred error measures colour and layout, the full error"
             " adds detail. Follow ratio: slope of the reconstruction's"
             " estimated shift on the input's (1 = moves with the input)."])
  return dict(blur_size=size, inverters=entries, figures=["color_position.png"],
              table=table)
