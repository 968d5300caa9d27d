"""Figures of reconstructions: input | reconstruction grids as PNG files."""

from __future__ import annotations

import numpy as np
from etils import epath
from PIL import Image


def pair_grid(inputs: np.ndarray, recons: np.ndarray, columns: int = 4,
              gap: int = 2) -> np.ndarray:
  """Tiles uint8 [N, H, W, 3] inputs and reconstructions as (input | recon)
  pairs, `columns` pairs per row, on a white background."""
  if inputs.shape != recons.shape:
    raise ValueError(f"inputs {inputs.shape} and reconstructions"
                     f" {recons.shape} must have the same shape")
  n, h, w, c = inputs.shape
  columns = max(1, min(columns, n))
  rows = -(-n // columns)
  cell_w = 2 * w + gap
  grid = np.full((rows * (h + gap) + gap, columns * (cell_w + 2 * gap) + gap, c),
                 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, columns)
    y = gap + r * (h + gap)
    x = gap + col * (cell_w + 2 * gap)
    grid[y:y + h, x:x + w] = inputs[i]
    grid[y:y + h, x + w + gap:x + 2 * w + gap] = recons[i]
  return grid


def write_png(path: epath.PathLike, image: np.ndarray) -> None:
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    Image.fromarray(image).save(f, format="PNG")
