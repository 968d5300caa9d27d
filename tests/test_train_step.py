"""The jitted train step: it learns, it is sharded, and it guards against NaN."""

import jax
import numpy as np

from inverter import presets, train


def fixed_batch(cfg, n=8, seed=0):
  rng = np.random.default_rng(seed)
  size = cfg.encoder.input_size
  # Smooth random images on the mean-subtracted 0-255 scale.
  low = rng.normal(0, 60, (n, size // 8, size // 8, 3))
  return np.repeat(np.repeat(low, 8, 1), 8, 2).astype(np.float32)


def test_train_step_lowers_the_loss_on_a_fixed_batch():
  cfg = presets.get_config("conv2", "test")
  exp = train.setup(cfg)
  state = train.create_train_state(exp, seed=0)
  step = train.make_train_step(exp)
  images = train.global_batch(exp, fixed_batch(cfg))
  losses = []
  for _ in range(40):
    state, loss = step(state, exp.encoder_params, images)
    losses.append(float(loss))
  assert int(state.step) == 40
  assert losses[-1] < 0.75 * losses[0], losses
  assert all(np.diff(losses[-10:]) < 0), losses


def test_batch_is_sharded_over_all_devices_and_params_replicated():
  cfg = presets.get_config("fc6", "test")
  exp = train.setup(cfg)
  images = train.global_batch(exp, fixed_batch(cfg))
  assert len(images.sharding.device_set) == jax.device_count() == 8
  assert images.addressable_shards[0].data.shape[0] == 8 // jax.device_count()
  state = train.create_train_state(exp, seed=0)
  leaf = jax.tree.leaves(state.params)[0]
  assert leaf.sharding.is_fully_replicated


def test_encoder_stays_frozen():
  cfg = presets.get_config("conv1", "test")
  exp = train.setup(cfg)
  before = jax.tree.map(np.asarray, exp.encoder_params)
  state = train.create_train_state(exp, seed=0)
  step = train.make_train_step(exp)
  state, _ = step(state, exp.encoder_params,
                  train.global_batch(exp, fixed_batch(cfg)))
  jax.tree.map(np.testing.assert_array_equal, before,
               jax.tree.map(np.asarray, exp.encoder_params))


def test_bfloat16_compute_trains_with_float32_params():
  cfg = presets.get_config("fc6", "test")
  cfg.compute_dtype = "bfloat16"
  exp = train.setup(cfg)
  state = train.create_train_state(exp, seed=0)
  step = train.make_train_step(exp)
  images = train.global_batch(exp, fixed_batch(cfg))
  first = None
  for _ in range(20):
    state, loss = step(state, exp.encoder_params, images)
    first = first or float(loss)
  assert np.isfinite(float(loss)) and float(loss) < first
  assert {l.dtype for l in jax.tree.leaves(state.params)} == {np.dtype("float32")}
