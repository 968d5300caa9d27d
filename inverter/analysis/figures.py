"""Labelled image grids for the studies' PNG figures.

`grid` lays out rows of uint8 RGB images of any sizes at one cell size, with
column titles above, row titles on the left and optional caption lines under
each cell (e.g. a sample's top-5 classes), on a white background.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_PAD = 4
_MIN_CELL = 96


def _font() -> ImageFont.ImageFont:
  try:
    return ImageFont.load_default(size=11)
  except TypeError:  # Pillow < 10.1 has one bitmap font size.
    return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
  box = font.getbbox(text or " ")
  return box[2] - box[0], box[3] - box[1]


def _fit_text(font, text: str, width: int) -> str:
  """`text`, shortened with '..' until it is at most `width` pixels wide."""
  if _text_size(font, text)[0] <= width:
    return text
  while text and _text_size(font, text + "..")[0] > width:
    text = text[:-1]
  return text + ".."


def stack_titled(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
  """Figures of any sizes one under the other, each under a title line, left
  aligned on white (e.g. one study figure per network); at least one."""
  font = _font()
  line_h = _text_size(font, "Ag")[1] + 2 * _PAD
  width = max(panel.shape[1] for _, panel in panels)
  out = []
  for title, panel in panels:
    band = Image.new("RGB", (width, line_h), "white")
    ImageDraw.Draw(band).text(
        (_PAD, _PAD), _fit_text(font, title, width - 2 * _PAD),
        fill="black", font=font)
    padded = np.full((panel.shape[0], width, 3), 255, np.uint8)
    padded[:, :panel.shape[1]] = panel
    out += [np.asarray(band), padded]
  return np.concatenate(out)


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> [size, size, 3]; nearest when enlarging a lot (keeps
  small images' pixels visible), bilinear otherwise."""
  if image.shape[:2] == (size, size):
    return image
  method = (Image.NEAREST if size >= 2 * max(image.shape[:2])
            else Image.BILINEAR)
  return np.asarray(Image.fromarray(image).resize((size, size), method))


def grid(cells: Sequence[Sequence[np.ndarray | None]],
         col_titles: Sequence[str] = (),
         row_titles: Sequence[str] = (),
         captions: Sequence[Sequence[Sequence[str]]] | None = None,
         cell: int | None = None) -> np.ndarray:
  """Tiles `cells[row][col]` (uint8 RGB, None leaves a blank) into one image.

  Args:
    cells: rows of images; rows may have different lengths.
    col_titles: one title per column, drawn above the first row.
    row_titles: one title per row, drawn left of it.
    captions: captions[row][col] is a list of text lines under that cell.
    cell: the cell size in pixels (default: the largest image, at least 96).
  """
  images_ = [im for row in cells for im in row if im is not None]
  if cell is None:
    cell = max([_MIN_CELL] + [max(im.shape[:2]) for im in images_])
  font = _font()
  line_h = _text_size(font, "Ag")[1] + 3
  ncols = max(len(row) for row in cells)
  n_caption = max([len(c) for row in (captions or []) for c in row] + [0])
  left = (max(_text_size(font, t)[0] for t in row_titles) + 2 * _PAD
          if row_titles else 0)
  top = line_h + _PAD if col_titles else 0
  cell_h = cell + n_caption * line_h
  width = left + ncols * (cell + _PAD) + _PAD
  height = top + len(cells) * (cell_h + _PAD) + _PAD
  canvas = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(canvas)
  for c, title in enumerate(col_titles):
    x = left + _PAD + c * (cell + _PAD)
    draw.text((x, _PAD // 2), _fit_text(font, title, cell), fill="black",
              font=font)
  for r, row in enumerate(cells):
    y = top + _PAD + r * (cell_h + _PAD)
    if r < len(row_titles):
      draw.text((_PAD, y + cell // 2 - line_h // 2), row_titles[r],
                fill="black", font=font)
    for c, im in enumerate(row):
      x = left + _PAD + c * (cell + _PAD)
      if im is not None:
        canvas.paste(Image.fromarray(resize(np.asarray(im, np.uint8), cell)),
                     (x, y))
      lines = captions[r][c] if captions and c < len(captions[r]) else []
      for i, line in enumerate(lines):
        draw.text((x, y + cell + 1 + i * line_h), _fit_text(font, line, cell),
                  fill="black", font=font)
  return np.asarray(canvas)
