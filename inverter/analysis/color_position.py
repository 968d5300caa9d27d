"""Study `color_position`: what each layer keeps of colour, rough contours
and layout versus detail, and whether reconstructions move with the input.

Colour and layout: the normalized error between the reconstruction and the
original after both are strongly blurred (area-downsampled to
config.color_position.blur_size pixels square), next to the full-resolution
error, which also counts the detail. A layer that keeps colours and rough
positions but loses detail has a small blurred error and a large full one.
Rough contours: the normalized error between edge maps (Sobel magnitude of
the grey image at config.color_position.edge_size pixels square).

The yardstick (the paper's headline claim): where the images have labels,
the same errors of two predictions that know only the image's class, the
data set's mean image and the mean image of the true class (computed on the
training split, see class_references.py), are reported as rows of their
own, and each inverter's blurred and edge errors as ratios to the class
mean's. A ratio below 1 means the reconstruction carries colour and layout
(or contours) of this image, not just of its class. A mean image does not
move with the input, so its follow ratio is 0.

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

from typing import Any

import ml_collections
import numpy as np
from etils import epath

from inverter.analysis import class_references, common, figures, measures

blur = measures.blur


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


class _Errors:
  """Full, blurred and edge-map errors of one kind of prediction."""

  def __init__(self, inv: common.Inverter, blur_size: int, edge_size: int):
    self.blur_size, self.edge_size = blur_size, edge_size
    self.full = common.ErrorTracker(inv, 1)
    self.blurred = common.ErrorTracker(inv, 1)
    self.edges = common.ErrorTracker(inv)

  def add(self, target: np.ndarray, predicted: np.ndarray,
          mask: np.ndarray, target_edges: np.ndarray,
          predicted_edges: np.ndarray | None = None) -> None:
    if predicted_edges is None:
      predicted_edges = measures.edge_map(predicted, self.edge_size)
    self.full.add(target, predicted, mask)
    self.blurred.add(blur(target, self.blur_size),
                     blur(predicted, self.blur_size), mask)
    self.edges.add(target_edges, predicted_edges, mask)

  def result(self) -> dict[str, dict[str, float]]:
    return dict(full=self.full.result(), blurred=self.blurred.result(),
                edges=self.edges.result())


def _reference_key(inv: common.Inverter,
                   config: ml_collections.ConfigDict) -> str:
  return repr((common.data_config(inv, config).to_dict(), inv.output_size))


def run(config: ml_collections.ConfigDict, inverters: list[common.Inverter],
        out_dir: epath.Path) -> dict[str, Any]:
  opts = config.color_position
  size, edge_size = int(opts.blur_size), int(opts.edge_size)
  with_refs = bool(opts.class_references) and class_references.has_labels(
      common.data_config(inverters[0], config))
  progress = common.Progress("color_position", len(inverters) * (
      common.num_batches(inverters[0], config) + 1))
  # Reference errors by preprocessing and output size, on the study images.
  references: dict[str, dict[str, Any]] = {}
  entries, rows, cells = [], [], []
  for inv in inverters:
    ours = _Errors(inv, size, edge_size)
    key = _reference_key(inv, config) if with_refs else None
    new_refs = None
    if with_refs and key not in references:
      refs = class_references.compute(inv, config, edge_size)
      overall_image, overall_edges = refs.overall_means()
      new_refs = dict(dataset_mean=_Errors(inv, size, edge_size),
                      class_mean=_Errors(inv, size, edge_size))
    first = None
    study_batches = (common.labelled_batches(inv, config) if with_refs
                     else common.batches(inv, config))
    for x, mask, *labels in study_batches:
      recon = inv.decode(inv.encode(x))
      target = inv.target(x)
      target_edges = measures.edge_map(target, edge_size)
      ours.add(target, recon, mask, target_edges)
      if new_refs is not None:
        class_image, class_edges = refs.class_means(labels[0])
        n = len(x)
        new_refs["dataset_mean"].add(
            target, np.repeat(overall_image, n, 0), mask, target_edges,
            np.repeat(overall_edges, n, 0))
        new_refs["class_mean"].add(target, class_image, mask, target_edges,
                                   class_edges)
      if first is None:
        first = (inv.to_rgb(target[0]), inv.to_rgb(blur(target[:1], size)[0]))
      progress.update(inv.label)
    if new_refs is not None:
      references[key] = {name: errs.result()
                         for name, errs in new_refs.items()}
    position, example = _position(
        inv, common.first_images(inv, config, int(opts.num_images)),
        opts.shifts)
    progress.update(inv.label)
    result = ours.result()
    f, b, e = (result[k]["normalized_error"]
               for k in ("full", "blurred", "edges"))
    entry = dict(common.describe(inv), **result, blurred_over_full=b / f,
                 position=position)
    row = [inv.label, f, b, e, b / f]
    if with_refs:
      class_mean = references[key]["class_mean"]
      entry["over_class_mean"] = dict(
          blurred=b / class_mean["blurred"]["normalized_error"],
          edges=e / class_mean["edges"]["normalized_error"])
      row += [entry["over_class_mean"]["blurred"],
              entry["over_class_mean"]["edges"]]
    entries.append(entry)
    rows.append(row + [position["follow_ratio"], position["shift_error_px"]])
    cells.append([first[0], ours.full.shown[0], first[1],
                  ours.blurred.shown[0]] + example)
  names = {"dataset_mean": "data set mean image",
           "class_mean": "mean image of the true class"}
  for i, (key, result) in enumerate(references.items()):
    suffix = f" ({i + 1})" if len(references) > 1 else ""
    for name, errs in result.items():
      f, b, e = (errs[k]["normalized_error"]
                 for k in ("full", "blurred", "edges"))
      class_mean = result["class_mean"]
      rows.append([f"reference: {names[name]}{suffix}", f, b, e, b / f,
                   b / class_mean["blurred"]["normalized_error"],
                   e / class_mean["edges"]["normalized_error"],
                   (0.0, "0 (static)"), ""])
  dy, dx = shift_list(opts.shifts, inverters[0].input_size)[0]
  common.write_figure(out_dir, "color_position.png", figures.grid(
      cells, col_titles=["original", "reconstruction", "blurred original",
                         "blurred recon.", f"moved ({dy},{dx})",
                         "its recon."],
      row_titles=[inv.label for inv in inverters]))
  columns = ["inverter", "full error", f"blurred error ({size}px)",
             f"edge error ({edge_size}px)", "blurred / full"]
  if with_refs:
    columns += ["blurred / class mean's", "edges / class mean's"]
  columns += ["shift follow ratio", "shift error (px)"]
  notes = [f"Blurred: both images area-downsampled to {size}x{size}; the"
           " blurred error measures colour and layout, the full error adds"
           f" detail. Edges: Sobel magnitude of the grey image at"
           f" {edge_size}x{edge_size} (rough contours). Follow ratio: slope"
           " of the reconstruction's estimated shift on the input's (1 ="
           " moves with the input)."]
  if with_refs:
    notes.append(
        "References know only the image's class: the mean image of the"
        " training split, and of the image's true class (for edges, the"
        " mean edge map). A ratio to the class mean's error below 1: the"
        " reconstruction carries colour and layout (edges: contours) of"
        " this image, beyond its class.")
  elif opts.class_references:
    notes.append("No class references: the study images have no labels.")
  table = common.write_table(
      out_dir, columns, rows,
      title="Colour, contours and layout versus detail; following"
            " translations", notes=notes)
  return dict(blur_size=size, edge_size=edge_size, inverters=entries,
              references=list(references.values()),
              figures=["color_position.png"], table=table)
