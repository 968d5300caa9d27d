"""Line charts as uint8 RGB images, drawn with PIL (no plotting library).

Used for training curves in reports: `line_chart` draws several named
(x, y) series on shared axes with rounded ticks and a legend.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from inverter.analysis import figures

# Distinguishable colours (Okabe-Ito and a few more), cycled.
COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167),
           (230, 159, 0), (86, 180, 233), (0, 0, 0), (240, 228, 66),
           (150, 150, 150), (120, 60, 20))


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
  """About `count` round tick values covering [low, high]."""
  if not math.isfinite(low) or not math.isfinite(high):
    raise ValueError(f"cannot place ticks on [{low}, {high}]")
  if high <= low:
    high = low + (abs(low) or 1.0)
  raw = (high - low) / max(1, count)
  magnitude = 10 ** math.floor(math.log10(raw))
  step = next(m * magnitude for m in (1, 2, 2.5, 5, 10)
              if m * magnitude >= raw)
  start = math.floor(low / step) * step
  ticks = []
  value = start
  while value <= high + step * 1e-9:
    ticks.append(round(value, 10))
    value += step
  if ticks[-1] < high:
    ticks.append(round(ticks[-1] + step, 10))
  return ticks


def _label(value: float) -> str:
  if value and (abs(value) >= 1e5 or abs(value) < 1e-3):
    return f"{value:.0e}"
  return f"{value:g}"


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               *, title: str = "", x_label: str = "", y_label: str = "",
               width: int = 760, height: int = 440) -> np.ndarray:
  """Draws every (x, y) series as a polyline with markers; uint8 [H, W, 3].

  A series' colour is fixed by its place in `series`, so an empty series is
  left out without changing the others' colours (charts drawn side by side
  then agree).
  """
  points = {name: (np.asarray(x, float), np.asarray(y, float))
            for name, (x, y) in series.items() if len(x)}
  if not points:
    raise ValueError("line_chart needs at least one non-empty series")
  xs = np.concatenate([x for x, _ in points.values()])
  ys = np.concatenate([y for _, y in points.values()])
  x_ticks = nice_ticks(float(xs.min()), float(xs.max()))
  y_ticks = nice_ticks(float(ys.min()), float(ys.max()))
  font = figures._font()  # pylint: disable=protected-access
  legend_width = 10 + max(figures._text_size(font, n)[0]  # pylint: disable=protected-access
                          for n in points) + 30
  left, right, top, bottom = 60, legend_width + 20, 44, 50
  plot_w, plot_h = width - left - right, height - top - bottom
  image = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(image)

  def to_px(x: float, y: float) -> tuple[float, float]:
    fx = (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])
    fy = (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])
    return left + fx * plot_w, top + (1 - fy) * plot_h

  for tick in y_ticks:
    _, py = to_px(x_ticks[0], tick)
    draw.line([(left, py), (left + plot_w, py)], fill=(225, 225, 225))
    text = _label(tick)
    draw.text((left - 6 - figures._text_size(font, text)[0], py - 6), text,  # pylint: disable=protected-access
              fill="black", font=font)
  for tick in x_ticks:
    px, _ = to_px(tick, y_ticks[0])
    draw.line([(px, top), (px, top + plot_h)], fill=(235, 235, 235))
    text = _label(tick)
    draw.text((px - figures._text_size(font, text)[0] / 2, top + plot_h + 6),  # pylint: disable=protected-access
              text, fill="black", font=font)
  draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
  places = {name: i for i, name in enumerate(series)}
  for i, (name, (x, y)) in enumerate(points.items()):
    colour = COLOURS[places[name] % len(COLOURS)]
    pixels = [to_px(a, b) for a, b in zip(x, y)]
    if len(pixels) > 1:
      draw.line(pixels, fill=colour, width=2)
    for px, py in pixels:
      draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=colour)
    ly = top + 4 + 16 * i
    lx = left + plot_w + 14
    draw.line([(lx, ly + 6), (lx + 18, ly + 6)], fill=colour, width=3)
    draw.text((lx + 24, ly), name, fill="black", font=font)
  draw.text((left, 6), title, fill="black", font=font)
  draw.text((left + plot_w / 2 - figures._text_size(font, x_label)[0] / 2,  # pylint: disable=protected-access
             height - 20), x_label, fill="black", font=font)
  draw.text((6, top - 17), y_label, fill="black", font=font)
  return np.asarray(image)
