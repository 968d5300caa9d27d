"""Shapes of every encoder tap and every default decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inverter import presets
from inverter.models import alexnet, decoder, encoders

CAFFE_SHAPES = {  # Caffe's own blob shapes for bvlc_reference_caffenet.
    "conv1": (55, 55, 96), "relu1": (55, 55, 96), "pool1": (27, 27, 96),
    "norm1": (27, 27, 96), "conv2": (27, 27, 256), "relu2": (27, 27, 256),
    "pool2": (13, 13, 256), "norm2": (13, 13, 256), "conv3": (13, 13, 384),
    "relu3": (13, 13, 384), "conv4": (13, 13, 384), "relu4": (13, 13, 384),
    "conv5": (13, 13, 256), "relu5": (13, 13, 256), "pool5": (6, 6, 256),
    "fc6": (4096,), "relu6": (4096,), "fc7": (4096,), "relu7": (4096,),
    "fc8": (1000,), "prob": (1000,)}


def test_caffenet_taps_have_caffe_shapes():
  assert alexnet.tap_shapes(alexnet.AlexNet(arch="caffenet")) == CAFFE_SHAPES


def test_alexnet_normalises_before_pooling():
  shapes = alexnet.tap_shapes(alexnet.AlexNet(arch="alexnet"))
  assert shapes["norm1"] == (55, 55, 96) and shapes["pool1"] == (27, 27, 96)
  assert shapes["norm2"] == (27, 27, 256) and shapes["pool2"] == (13, 13, 256)
  assert alexnet.tap_names("alexnet").index("norm1") < alexnet.tap_names(
      "alexnet").index("pool1")


def test_default_taps_follow_the_paper():
  want = {"conv1": "norm1", "conv2": "norm2", "conv3": "relu3",
          "conv4": "relu4", "conv5": "pool5", "fc6": "relu6", "fc7": "relu7",
          "fc8": "fc8", "prob": "prob"}
  assert {l: alexnet.default_tap("caffenet", l) for l in alexnet.LAYERS} == want
  assert alexnet.default_tap("alexnet", "conv1") == "pool1"


def test_caffenet_params_have_caffe_layout():
  model = alexnet.AlexNet()
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 227, 227, 3)))["params"])
  shapes = {k: (v["kernel"].shape, v["bias"].shape) for k, v in params.items()}
  assert shapes == {
      "conv1": ((11, 11, 3, 96), (96,)), "conv2": ((5, 5, 48, 256), (256,)),
      "conv3": ((3, 3, 256, 384), (384,)), "conv4": ((3, 3, 192, 384), (384,)),
      "conv5": ((3, 3, 192, 256), (256,)), "fc6": ((9216, 4096), (4096,)),
      "fc7": ((4096, 4096), (4096,)), "fc8": ((4096, 1000), (1000,))}


@pytest.mark.parametrize("preset", ["demo", "test"])
def test_reduced_encoder_fc6_input_follows_conv_geometry(preset):
  cfg = presets.get_config("fc6", preset)
  model = encoders.from_config(cfg.encoder)
  shapes = encoders.tap_shapes(model)
  assert set(shapes) == set(encoders.tap_names(cfg.encoder.arch))
  pool5 = shapes["pool5"]
  assert pool5[-1] == cfg.encoder.widths[-1]
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(
      (1, model.input_size, model.input_size, 3)))["params"])
  assert params["fc6"]["kernel"].shape == (int(np.prod(pool5)),
                                           cfg.encoder.fc_width)
  assert shapes["prob"] == (cfg.encoder.num_classes,)


def test_until_stops_early_and_matches_full_pass():
  cfg = presets.get_config("conv2", "test")
  model = encoders.from_config(cfg.encoder)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3)) * 50
  params = model.init(jax.random.key(1), x)
  full = model.apply(params, x)
  part = model.apply(params, x, until="norm2")
  assert list(part) == list(alexnet.tap_names("caffenet"))[:8]
  np.testing.assert_allclose(part["norm2"], full["norm2"], rtol=1e-6)
  np.testing.assert_allclose(full["prob"].sum(-1), 1.0, rtol=1e-5)


def test_encoder_rejects_wrong_input_size():
  model = alexnet.AlexNet()
  with pytest.raises(ValueError, match="encoder.input_size=227"):
    model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))


@pytest.mark.parametrize("bad,call", [
    ("conv6", lambda v: encoders.check_layer(v)),
    ("vgg", lambda v: encoders.check_arch(v)),
    ("relu9", lambda v: encoders.check_tap("caffenet", v))])
def test_unknown_names_are_rejected_with_the_choices(bad, call):
  with pytest.raises(ValueError, match="choose one of") as e:
    call(bad)
  assert bad in str(e.value)


EXPECTED_DECODERS = {  # layer: (upconv widths, output size) at 227 input.
    "conv1": ((128, 64, 3), 216), "conv2": ((128, 64, 32, 3), 208),
    "conv3": ((128, 64, 32, 3), 208), "conv4": ((128, 64, 32, 3), 208),
    "conv5": ((128, 64, 32, 16, 3), 192),
    "fc6": ((128, 64, 32, 16, 8, 3), 227), "fc8": ((128, 64, 32, 16, 8, 3), 227)}


@pytest.mark.parametrize("layer", sorted(EXPECTED_DECODERS))
def test_paper_decoders_reach_the_input_size(layer):
  cfg = presets.get_config(layer)
  feats = encoders.tap_shapes(encoders.from_config(cfg.encoder))[
      encoders.default_tap("caffenet", layer)]
  resolved = decoder.resolve(cfg.decoder, feats, 227)
  assert (resolved["upconv_channels"], resolved["output_size"]) == (
      EXPECTED_DECODERS[layer])
  model = decoder.from_config(cfg.decoder, feats, 227)
  out = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((2, *feats)))[0])
  size = resolved["output_size"]
  assert out.shape == (2, size, size, 3)


@pytest.mark.parametrize("arch", ["caffenet", "torchvision_alexnet",
                                  "vgg16"])
@pytest.mark.parametrize("preset", ["demo", "test"])
@pytest.mark.parametrize("layer", encoders.LAYERS)
def test_reduced_decoders_run_for_every_layer(arch, preset, layer):
  cfg = presets.get_config(layer, f"{preset},arch={arch}")
  feats = encoders.tap_shapes(encoders.from_config(cfg.encoder))[
      encoders.default_tap(arch, layer)]
  size = cfg.encoder.input_size
  resolved = decoder.resolve(cfg.decoder, feats, size)
  out = jax.eval_shape(lambda: decoder.from_config(
      cfg.decoder, feats, size).init_with_output(
          jax.random.key(0), jnp.zeros((2, *feats)))[0])
  assert out.shape == (2, resolved["output_size"], resolved["output_size"], 3)
  # Map decoders land within a factor sqrt(2) of the input size.
  assert size / 1.42 <= resolved["output_size"] <= size * 1.42


def test_decoder_output_is_linear_in_last_layer():
  model = decoder.UpconvDecoder(conv_channels=(4,), upconv_channels=(4, 3))
  x = jnp.ones((1, 3, 3, 2))
  params = model.init(jax.random.key(0), x)
  # Negative outputs survive: no nonlinearity after the last up-convolution.
  params = jax.tree.map(lambda p: p, params)
  params["params"]["upconv2"]["bias"] = -1e3 * jnp.ones(3)
  assert float(model.apply(params, x).max()) < 0


def test_decoder_rejects_features_of_the_wrong_rank():
  model = decoder.UpconvDecoder(conv_channels=(4,), upconv_channels=(3,))
  with pytest.raises(ValueError, match=r"\[batch, dim\] or"):
    model.init(jax.random.key(0), jnp.zeros((2, 3, 4)))


@pytest.mark.parametrize("arch", encoders.ARCHITECTURES)
def test_every_encoder_refuses_images_of_the_wrong_size(arch):
  cfg = presets.encoder_config(arch)
  model = encoders.from_config(cfg)
  wrong = jnp.zeros((1, cfg.input_size - 1, cfg.input_size - 1, 3))
  with pytest.raises(ValueError, match=f"encoder.input_size={cfg.input_size}"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x), wrong)
