"""Images in and out: users' images read as uint8 RGB arrays, and figures of
reconstructions (input | reconstruction grids) written as PNG files."""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np
from etils import epath
from PIL import Image, UnidentifiedImageError

from inverter import errors

# One image: a file path (local or gs://), a PIL image, or a uint8 array
# [H, W], [H, W, 1], [H, W, 3] or [H, W, 4].
OneImage = str | os.PathLike | Image.Image | np.ndarray
# One image, a batch array [N, H, W, C], or a sequence of single images.
Images = OneImage | Sequence[OneImage]


class ImageInputError(errors.UserError, ValueError):
  """An image that cannot be used; the message says which and why."""


def is_single(images: Images) -> bool:
  """Whether `images` is one image (its results then have no batch axis)."""
  if isinstance(images, np.ndarray):
    return images.ndim in (2, 3)
  return isinstance(images, (str, os.PathLike, Image.Image))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """The image file at `path` (local or gs://) as uint8 RGB [H, W, 3]."""
  path = epath.Path(path)
  try:
    data = path.read_bytes()
  except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
    raise ImageInputError(f"Cannot read the image {path}: {e}") from None
  try:
    with Image.open(io.BytesIO(data)) as image:
      return pil_to_rgb(image, str(path))
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ImageInputError(
        f"{path} is not a readable image ({len(data)} bytes; {e}).") from None


def pil_to_rgb(image: Image.Image, what: str = "the image") -> np.ndarray:
  """A PIL image of any mode as uint8 RGB [H, W, 3] (alpha dropped)."""
  if image.mode in ("I;16", "I", "F"):
    raise ImageInputError(
        f"{what} has {image.mode!r} pixels (16-bit or float); convert it to"
        " 8-bit RGB first.")
  return _checked(np.asarray(image.convert("RGB")), what)


def as_rgb_list(images: Images) -> list[np.ndarray]:
  """`images` (see `Images`) as a list of uint8 RGB [H, W, 3] arrays.

  Grayscale is repeated to three channels and alpha dropped. Refused with an
  `ImageInputError` that names the image: non-uint8 arrays, empty images,
  channel counts other than 1, 3 or 4, unreadable or missing files.
  """
  if is_single(images):
    images = [images]
  elif isinstance(images, np.ndarray):
    if images.ndim != 4:
      raise ImageInputError(
          f"Images of shape {images.shape}: pass one image [H, W, 3], a batch"
          " [N, H, W, 3], or a list of images.")
    images = list(images)
  out = []
  for i, image in enumerate(images):
    if isinstance(image, (str, os.PathLike)):
      out.append(read_rgb(image))
    elif isinstance(image, Image.Image):
      out.append(pil_to_rgb(image, f"Image {i} (PIL, {image.mode})"))
    else:
      out.append(_array_to_rgb(image, f"Image {i}"))
  return out


def _array_to_rgb(image: Any, what: str) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ImageInputError(
        f"{what} has dtype {image.dtype} (shape {image.shape}); pass uint8"
        " RGB images (0-255), a PIL image or a file path, e.g."
        " np.asarray(PIL.Image.open(f).convert('RGB')).")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ImageInputError(
        f"{what} has shape {image.shape}; expected [H, W, 3] RGB (grayscale"
        " [H, W] or [H, W, 1] and RGBA [H, W, 4] are accepted).")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return _checked(image[..., :3], what)


def _checked(image: np.ndarray, what: str) -> np.ndarray:
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ImageInputError(f"{what} is empty: shape {image.shape}.")
  return image


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
