"""Each feature perturbation keeps what it claims, on random vectors."""

import jax
import numpy as np
import pytest

from inverter import feature_transforms, perturbations


def features(shape=(6, 500), seed=0, positive_fraction=0.5):
  """Random post-ReLU-like features: a given share of positive entries."""
  rng = np.random.default_rng(seed)
  values = rng.exponential(2.0, size=shape)
  return np.where(rng.random(shape) < positive_fraction, values,
                  0.0).astype(np.float32)


def flat(x):
  return np.asarray(x).reshape(len(x), -1)


@pytest.mark.parametrize("shape", [(6, 500), (4, 5, 5, 8)])
def test_binarize_keeps_norm_and_support_with_one_value(shape):
  x = features(shape) - 0.5  # some negative entries too
  out = np.asarray(perturbations.binarize(x))
  assert out.shape == x.shape
  np.testing.assert_allclose(perturbations.l2_norms(out),
                             perturbations.l2_norms(x), rtol=1e-5)
  for xi, oi in zip(flat(x), flat(out)):
    np.testing.assert_array_equal(oi > 0, xi > 0)
    assert np.all(oi[xi <= 0] == 0)
    assert np.unique(oi[xi > 0]).size == 1


def test_binarize_of_a_vector_without_positive_entries_is_zero():
  out = perturbations.binarize(-np.abs(features((2, 50))))
  assert not np.any(np.asarray(out))


@pytest.mark.parametrize("rate", [0.5, 0.25])
def test_dropout_zeroes_exactly_the_fraction_and_keeps_the_norm(rate):
  x = np.abs(features((5, 400), positive_fraction=1.0)) + 0.1  # no zeros
  out = np.asarray(perturbations.dropout(x, jax.random.key(1), rate))
  dropped = flat(out) == 0
  assert np.all(dropped.sum(axis=1) == round(rate * 400))
  np.testing.assert_allclose(perturbations.l2_norms(out),
                             perturbations.l2_norms(x), rtol=1e-5)
  # The kept entries are the originals times one scale per vector.
  for xi, oi, di in zip(flat(x), flat(out), dropped):
    ratio = oi[~di] / xi[~di]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    assert ratio[0] > 1


def test_dropout_picks_a_uniformly_random_subset_per_key():
  x = np.ones((200, 64), np.float32)
  a = flat(perturbations.dropout(x, jax.random.key(0))) == 0
  b = flat(perturbations.dropout(x, jax.random.key(0))) == 0
  c = flat(perturbations.dropout(x, jax.random.key(7))) == 0
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.all(a == a[0])  # a different subset for each example
  # Over 200 examples every position is dropped about half of the time.
  assert np.all(np.abs(a.mean(axis=0) - 0.5) < 0.15)


@pytest.mark.parametrize("snr_db", [20.0, 0.0, -5.0])
def test_gaussian_noise_has_the_requested_snr(snr_db):
  x = features((4, 40_000), positive_fraction=0.3)
  out = np.asarray(perturbations.gaussian_noise(x, jax.random.key(2), snr_db))
  noise = flat(out) - flat(x)
  measured = 10 * np.log10(np.mean(flat(x) ** 2, axis=1)
                           / np.mean(noise ** 2, axis=1))
  np.testing.assert_allclose(measured, snr_db, atol=0.1)
  assert np.all(np.abs(noise.mean(axis=1)) < 0.05 * noise.std(axis=1))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantize_uses_2_to_the_bits_levels_within_half_a_step(bits):
  x = features((5, 3000)) - 0.3
  out = flat(perturbations.quantize(x, bits))
  for xi, oi in zip(flat(x), out):
    assert np.unique(oi).size <= 2 ** bits
    assert oi.min() == pytest.approx(xi.min()) and oi.max() == pytest.approx(
        xi.max())
    step = (xi.max() - xi.min()) / (2 ** bits - 1)
    assert np.max(np.abs(oi - xi)) <= step / 2 * (1 + 1e-4)


def test_quantize_keeps_zeros_of_non_negative_features():
  x = features((3, 1000))
  out = flat(perturbations.quantize(x, 3))
  np.testing.assert_array_equal(out[flat(x) == 0], 0)


def test_top_k_keeps_exactly_the_k_largest_and_without_top_k_the_rest():
  x = np.random.default_rng(3).normal(size=(8, 100)).astype(np.float32)
  top = np.asarray(perturbations.top_k(x, 5))
  rest = np.asarray(perturbations.without_top_k(x, 5))
  for xi, ti, ri in zip(x, top, rest):
    largest = set(np.argsort(-xi)[:5])
    assert set(np.flatnonzero(ti)) == largest
    assert set(np.flatnonzero(ri == 0)) == largest
  np.testing.assert_array_equal(top + rest, x)


def test_top_k_of_ties_still_keeps_exactly_k():
  x = np.ones((2, 20), np.float32)
  assert np.all((np.asarray(perturbations.top_k(x, 5)) != 0).sum(1) == 5)


def test_specs_apply_the_named_perturbation_and_reject_typos():
  x = features((3, 64))
  key = jax.random.key(0)
  np.testing.assert_array_equal(perturbations.apply("binarize", x),
                                perturbations.binarize(x))
  np.testing.assert_array_equal(perturbations.apply("dropout:0.5", x, key),
                                perturbations.dropout(x, key, 0.5))
  np.testing.assert_array_equal(perturbations.apply("quantize:3", x),
                                perturbations.quantize(x, 3))
  np.testing.assert_array_equal(perturbations.apply("none", x), x)
  assert perturbations.describe("noise:10") == "noise SNR 10 dB"
  for bad in ("dropout", "binarise", "quantize:2.5", "noise:loud"):
    with pytest.raises(ValueError, match="binarize"):
      perturbations.parse(bad)
  with pytest.raises(ValueError, match="needs a key"):
    perturbations.apply("noise:10", x)


def test_feature_transform_top5_is_what_the_decoder_sees():
  x = np.random.default_rng(4).normal(size=(4, 30)).astype(np.float32)
  np.testing.assert_array_equal(feature_transforms.apply("", x), x)
  np.testing.assert_array_equal(feature_transforms.apply("top5", x),
                                perturbations.top_k(x, 5))
  with pytest.raises(ValueError, match="feature_transform"):
    feature_transforms.apply("bottom5", x)
