"""Optimisation-based inversion (inverter/optimization.py): M&V's priors as
written, an objective that falls, features that are matched, and a hybrid
that never ends worse than the decoder output it starts from."""

import jax
import numpy as np
import pytest

from inverter import optimization, presets, train


@pytest.fixture(scope="module")
def conv1():
  """The `test` preset's random encoder up to conv1 (norm1, 16x16x8)."""
  exp = train.setup(presets.get_config("conv1", "test"))
  return optimization.problem_for(exp)


def smooth_images(count: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  small = rng.normal(0, 40, (count, 8, 8, 3))
  return np.asarray(jax.image.resize(small, (count, 32, 32, 3), "cubic"),
                    np.float32)


def test_priors_equal_a_direct_computation():
  x = np.random.default_rng(0).normal(0, 30, (2, 5, 6, 3))
  norms = np.sqrt((x ** 2).sum(-1))
  np.testing.assert_allclose(optimization.alpha_norm(x, 6.0),
                             (norms ** 6).mean(axis=(1, 2)), rtol=1e-5)
  dy = np.zeros_like(x)
  dx = np.zeros_like(x)
  for i in range(5 - 1):
    dy[:, i] = x[:, i + 1] - x[:, i]
  for j in range(6 - 1):
    dx[:, :, j] = x[:, :, j + 1] - x[:, :, j]
  for beta in (2.0, 1.0):
    expected = ((dx ** 2 + dy ** 2) ** (beta / 2)).sum(-1).mean(axis=(1, 2))
    np.testing.assert_allclose(optimization.total_variation(x, beta),
                               expected, rtol=1e-4)


def test_the_energy_is_weighted_as_mahendran_and_vedaldi_do(conv1):
  x = smooth_images(8)
  target = np.asarray(conv1.features(conv1.encoder_params, x))
  settings = optimization.Settings(feature_weight=100.0)
  # At the target's own image only the priors remain: 1/B^6 and (6.5/B)^2.
  expected = (np.asarray(optimization.alpha_norm(x, 6.0)) / 80.0 ** 6
              + np.asarray(optimization.total_variation(x, 2.0))
              * (6.5 / 80.0) ** 2)
  np.testing.assert_allclose(
      optimization.energy(settings, conv1, x, target), expected, rtol=1e-4)
  # A zero image misses every feature: the feature term is C, exactly.
  zero = np.zeros_like(x)
  prior = np.asarray(optimization.alpha_norm(zero, 6.0))  # 0
  feats0 = np.asarray(conv1.features(conv1.encoder_params, zero))
  missed = ((feats0 - target) ** 2).sum((1, 2, 3)) / (target ** 2).sum(
      (1, 2, 3))
  np.testing.assert_allclose(
      optimization.energy(settings, conv1, zero, target),
      100.0 * missed + prior, rtol=1e-4)


def test_from_noise_the_energy_falls_and_the_features_are_matched(conv1):
  x = smooth_images(8)
  target = np.asarray(conv1.features(conv1.encoder_params, x))
  settings = optimization.Settings(iterations=150, final_iterations=20)
  noise = optimization.initial_images(settings, x.shape, jax.random.key(7))
  start_energy = optimization.energy(settings, conv1, noise, target)
  out = optimization.invert(settings, conv1, target)
  assert np.all(out["energy"] < 0.2 * start_energy)
  np.testing.assert_allclose(
      out["energy"], optimization.energy(settings, conv1, out["image"],
                                         target), rtol=1e-4)
  # A wrong or missing gradient leaves the features of noise (error ~1).
  assert np.all(out["feature_error"] < 0.15), out["feature_error"]
  # Deterministic for a seed.
  again = optimization.invert(settings, conv1, target)
  np.testing.assert_array_equal(again["image"], out["image"])


def test_the_hybrid_never_ends_above_its_start(conv1):
  x = smooth_images(8, seed=1)
  target = np.asarray(conv1.features(conv1.encoder_params, x))
  # A start already close to the answer (as a decoder's output is), and
  # one iteration too few to improve on it by much.
  start = x + np.random.default_rng(2).normal(0, 3, x.shape).astype(
      np.float32)
  for anchor_weight in (0.0, 1.0):
    settings = optimization.Settings(iterations=3, final_iterations=2,
                                     init="image",
                                     anchor_weight=anchor_weight)
    out = optimization.invert(settings, conv1, target, start=start)
    assert np.all(out["energy"] <= optimization.energy(
        settings, conv1, start, target) + 1e-6)


def test_the_anchor_term_holds_the_hybrid_near_its_start(conv1):
  x = smooth_images(8, seed=3)
  target = np.asarray(conv1.features(conv1.encoder_params, x))
  start = x + np.random.default_rng(4).normal(0, 20, x.shape).astype(
      np.float32)
  # The term as written: w mean_p ||x_p - start_p||^2 / B^2.
  free = optimization.Settings(init="image")
  held = optimization.Settings(init="image", anchor_weight=50.0)
  term = 50.0 * ((x - start) ** 2).sum(-1).mean(axis=(1, 2)) / 80.0 ** 2
  np.testing.assert_allclose(
      optimization.energy(held, conv1, x, target, anchor=start)
      - optimization.energy(free, conv1, x, target, anchor=start),
      term, rtol=1e-4)
  # The heavier the anchor, the nearer the result stays to its start (with
  # a sign error it would be pushed away instead).
  distance = []
  for anchor_weight in (0.0, 50.0, 5000.0):
    settings = optimization.Settings(iterations=40, final_iterations=5,
                                     init="image",
                                     anchor_weight=anchor_weight)
    out = optimization.invert(settings, conv1, target, start=start)
    distance.append(float(np.abs(out["image"] - start).mean()))
  assert distance[0] > distance[1] > distance[2], distance


def test_bad_settings_are_refused_before_any_work(conv1):
  for bad, match in [(dict(iterations=0), "iterations=0"),
                     (dict(init="zeros"), "init='zeros'"),
                     (dict(momentum=1.0), "momentum=1.0"),
                     (dict(steps=3), "Unknown optimization option")]:
    with pytest.raises(optimization.OptimizationError, match=match):
      optimization.Settings.from_config(bad)
  with pytest.raises(optimization.OptimizationError, match="start images"):
    optimization.invert(optimization.Settings(init="image"), conv1,
                        np.zeros((8, 16, 16, 8), np.float32))
