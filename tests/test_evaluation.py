"""The normalized reconstruction error and the reconstruction grids."""

import itertools

import numpy as np
import pytest

from inverter import evaluation, images


def normalized_error(batches):
  acc = evaluation.ErrorAccumulator()
  for targets, recons, mask in batches:
    acc.add(evaluation.batch_sums(targets, recons, mask))
  return acc.result()


def direct(targets, recons):
  num = np.mean([np.linalg.norm(t - r) for t, r in zip(targets, recons)])
  den = np.mean([np.linalg.norm(a - b)
                 for a, b in itertools.combinations(targets, 2)])
  return num / den


def test_matches_the_definition_on_one_batch():
  rng = np.random.default_rng(0)
  t = rng.normal(0, 50, (6, 5, 5, 3)).astype(np.float32)
  r = t + rng.normal(0, 20, t.shape).astype(np.float32)
  got = normalized_error([(t, r, np.ones(6, bool))])
  assert got["normalized_error"] == pytest.approx(direct(t, r), rel=1e-4)
  assert got["num_images"] == 6 and got["num_pairs"] == 15


def test_perfect_reconstruction_scores_zero_and_swapped_images_one():
  rng = np.random.default_rng(1)
  t = rng.normal(0, 50, (2, 4, 4, 3)).astype(np.float32)
  assert normalized_error([(t, t, np.ones(2, bool))])[
      "normalized_error"] == pytest.approx(0, abs=1e-6)
  assert normalized_error([(t, t[::-1], np.ones(2, bool))])[
      "normalized_error"] == pytest.approx(1, rel=1e-5)


def test_padding_rows_are_ignored():
  rng = np.random.default_rng(2)
  t = rng.normal(0, 50, (4, 3, 3, 3)).astype(np.float32)
  r = rng.normal(0, 50, t.shape).astype(np.float32)
  padded_t = np.concatenate([t, 1e4 * np.ones_like(t[:2])])
  padded_r = np.concatenate([r, -1e4 * np.ones_like(r[:2])])
  mask = np.array([1, 1, 1, 1, 0, 0], bool)
  assert normalized_error([(padded_t, padded_r, mask)]) == pytest.approx(
      normalized_error([(t, r, np.ones(4, bool))]), rel=1e-5)


def test_is_invariant_to_pixel_scale():
  rng = np.random.default_rng(3)
  t = rng.normal(0, 1, (5, 3, 3, 3)).astype(np.float32)
  r = rng.normal(0, 1, t.shape).astype(np.float32)
  m = np.ones(5, bool)
  assert normalized_error([(t * 255, r * 255, m)])["normalized_error"] == (
      pytest.approx(normalized_error([(t, r, m)])["normalized_error"], rel=1e-5))


def test_needs_two_images():
  t = np.zeros((2, 2, 2, 3), np.float32)
  with pytest.raises(ValueError, match="at least 2"):
    normalized_error([(t, t, np.array([True, False]))])


def test_pair_grid_places_inputs_left_of_reconstructions(tmp_path):
  inputs = np.zeros((3, 4, 4, 3), np.uint8)
  recons = np.full((3, 4, 4, 3), 200, np.uint8)
  grid = images.pair_grid(inputs, recons, columns=2, gap=1)
  assert grid.shape == (2 * 5 + 1, 2 * (9 + 2) + 1, 3)
  assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 200).all()
  images.write_png(tmp_path / "sub" / "g.png", grid)
  from PIL import Image
  assert np.array_equal(np.asarray(Image.open(tmp_path / "sub" / "g.png")), grid)
