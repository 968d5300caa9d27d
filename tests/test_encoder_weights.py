"""Encoder weights on disk: round trip, and clear errors for every bad case."""

import json

import jax
import numpy as np
import pytest

from inverter import encoder_weights, presets
from inverter.models import encoders


def saved_encoder(tmp_path, cfg):
  model = encoders.from_config(cfg.encoder)
  params = encoder_weights.init_params(model, seed=3)
  path = tmp_path / "enc"
  encoder_weights.save(str(path), params, cfg.encoder,
                       preprocessing=dict(channel_order="BGR"),
                       source=dict(file="test"))
  return model, params, path


def test_round_trip_restores_identical_params(tmp_path):
  cfg = presets.get_config("fc6", "test")
  model, params, path = saved_encoder(tmp_path, cfg)
  cfg.encoder.weights = str(path)
  assert encoder_weights.check(cfg.encoder) == []
  loaded = encoder_weights.load(cfg.encoder, model)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  meta = json.loads((path / "metadata.json").read_text())
  assert meta["architecture"]["arch"] == "caffenet"


def test_missing_weights_name_the_field_and_the_way_out(tmp_path):
  cfg = presets.get_config("fc6", "test")
  cfg.encoder.weights = str(tmp_path / "nowhere")
  [problem] = encoder_weights.check(cfg.encoder)
  assert "encoder.weights" in problem and "nowhere" in problem
  assert "random" in problem and "docs/encoders.md" in problem
  with pytest.raises(encoder_weights.EncoderWeightsError):
    encoder_weights.load(cfg.encoder, encoders.from_config(cfg.encoder))


def test_architecture_mismatch_lists_each_field(tmp_path):
  cfg = presets.get_config("fc6", "test")
  _, _, path = saved_encoder(tmp_path, cfg)
  cfg.encoder.weights = str(path)
  cfg.encoder.fc_width = 32
  cfg.encoder.arch = "alexnet"
  [problem] = encoder_weights.check(cfg.encoder)
  assert "encoder.fc_width" in problem and "encoder.arch" in problem


def test_damaged_params_are_an_error_not_silent_weights(tmp_path):
  cfg = presets.get_config("fc6", "test")
  model, _, path = saved_encoder(tmp_path, cfg)
  cfg.encoder.weights = str(path)
  for f in (path / "params").rglob("*"):
    if f.is_file() and f.stat().st_size > 100:
      f.write_bytes(b"\0" * 10)
  with pytest.raises(encoder_weights.EncoderWeightsError):
    encoder_weights.load(cfg.encoder, model)


def test_random_weights_are_reproducible_and_announced(caplog):
  cfg = presets.get_config("fc6", "test")
  assert cfg.encoder.weights == "random"
  model = encoders.from_config(cfg.encoder)
  a = encoder_weights.load(cfg.encoder, model)
  b = encoder_weights.load(cfg.encoder, model)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert "RANDOMLY INITIALISED" in caplog.text
  # It names the network, not always AlexNet (VGG and ResNets run random
  # controls too).
  assert f"random {cfg.encoder.arch} keeps" in caplog.text


def test_encoder_token_takes_architecture_and_geometry_from_the_weights(
    tmp_path):
  # An encoder unlike any preset (other widths, input size and mean): the
  # `encoder=PATH` config token alone must make the config match it.
  cfg = presets.get_config("fc6", "test")
  cfg.encoder.widths = (8, 16, 24, 16, 8)
  cfg.encoder.input_size = 40
  cfg.encoder.num_classes = 7
  cfg.encoder.preprocessing.mean = (90.0, 100.0, 110.0)
  _, _, path = saved_encoder(tmp_path, cfg)

  from inverter import preflight
  got = presets.get_config("fc6", f"test,encoder={path}")
  assert got.encoder.weights == str(path)
  assert tuple(got.encoder.widths) == (8, 16, 24, 16, 8)
  assert got.encoder.num_classes == 7
  assert got.data.crop_size == got.encoder.input_size == 40
  assert tuple(got.data.mean) == (90.0, 100.0, 110.0)
  assert encoder_weights.check(got.encoder) == []
  assert preflight.config_problems(got) == []


def test_encoder_token_without_metadata_names_the_file(tmp_path):
  with pytest.raises(ValueError, match="metadata.json"):
    presets.get_config("fc6", f"test,encoder={tmp_path}")
