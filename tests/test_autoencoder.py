"""The autoencoder baseline: encoder and decoder trained together."""

import jax
import numpy as np
import pytest

import inverter
from inverter import encoder_weights, presets, train
from inverter.models import encoders


def tiny(**overrides):
  config = presets.get_config("conv2", "test")
  config.num_train_steps = 3
  config.checkpoint_every_steps = 3
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("autoencoder")
  config = tiny(train_encoder=True)
  metrics = train.train_and_evaluate(config, str(workdir))
  return config, workdir, metrics


def test_the_encoder_moves_from_its_start_and_the_decoder_trains(
    autoencoder_run):
  config, workdir, _ = autoencoder_run
  start = encoder_weights.load(config.encoder,
                               encoders.from_config(config.encoder))
  state = train.restore_latest(train.setup(config), str(workdir))
  assert int(state.step) == 3
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b),
                       state.params["encoder"], start)
  # Layers up to the inverted tap (conv2) get gradients, later ones none.
  assert moved["conv1"]["kernel"] and moved["conv2"]["kernel"]
  assert not moved["fc6"]["kernel"]
  assert set(state.params) == {"decoder", "encoder"}


def test_a_frozen_encoder_inverter_never_changes_the_encoder(tmp_path):
  config = tiny()
  train.train_and_evaluate(config, str(tmp_path))
  state = train.restore_latest(train.setup(config), str(tmp_path))
  assert "encoder" not in state.params  # only the decoder is trained


def test_loading_an_autoencoder_uses_its_trained_encoder(autoencoder_run):
  config, workdir, metrics = autoencoder_run
  loaded = inverter.load(str(workdir))
  state = train.restore_latest(train.setup(config), str(workdir))
  jax.tree.map(np.testing.assert_array_equal, loaded.exp.encoder_params,
               jax.tree.map(np.asarray, state.params["encoder"]))
  assert loaded.step == metrics["step"] == 3


def test_an_autoencoder_workdir_refuses_a_frozen_encoder_config(
    autoencoder_run):
  _, workdir, _ = autoencoder_run
  with pytest.raises(train.WorkdirMismatchError, match="train_encoder"):
    train.check_workdir(tiny(), workdir)
