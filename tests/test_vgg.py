"""VGG-16 in both layouts and the encoder registry: the Caffe release ports to
the same activations as an independent PyTorch pass, every inverter layer
has a VGG meaning and a decoder, and training feeds each encoder its own
preprocessing."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from etils import epath

import caffe_proto_writer as writer
import reference_torchvision_torch as ref
from inverter import encoder_weights, preflight, presets, train
from inverter.models import alexnet, decoder, encoders, vgg
from inverter.port import caffe, common, vgg_caffe
from inverter.port import torchvision as tv_port

TOLERANCE = 1e-4  # max |ours - reference| / max |reference|, at every tap.
WIDTHS = (4, 8, 8, 16, 16)


def vgg_caffe_layers(sd):
  """VGG-16's train_val layers as the authors' Caffe file holds them."""
  layers = [dict(name="data", type="Data", top=["data", "label"])]
  bottom = "data"
  for b, depth in enumerate(vgg.BLOCK_DEPTHS):
    for i in range(depth):
      name = f"conv{b + 1}_{i + 1}"
      w, bias = sd[f"{name}.weight"].numpy(), sd[f"{name}.bias"].numpy()
      layers += [
          dict(name=name, type="Convolution", bottom=[bottom], top=[name],
               blobs=[w, bias], conv=dict(num_output=w.shape[0],
                                          kernel_size=[3], pad=[1])),
          dict(name=f"relu{b + 1}_{i + 1}", type="ReLU", bottom=[name],
               top=[name])]
      bottom = name
    layers.append(dict(name=f"pool{b + 1}", type="Pooling", bottom=[bottom],
                       top=[f"pool{b + 1}"],
                       pool=dict(pool=0, kernel_size=2, stride=2)))
    bottom = f"pool{b + 1}"
  for j in (6, 7, 8):
    w, bias = sd[f"fc{j}.weight"].numpy(), sd[f"fc{j}.bias"].numpy()
    layers.append(dict(name=f"fc{j}", type="InnerProduct", bottom=[bottom],
                       top=[f"fc{j}"], blobs=[w, bias],
                       ip=dict(num_output=w.shape[0])))
    bottom = f"fc{j}"
    if j < 8:
      layers += [dict(name=f"relu{j}", type="ReLU", bottom=[bottom],
                      top=[bottom]),
                 dict(name=f"drop{j}", type="Dropout", bottom=[bottom],
                      top=[bottom], dropout=dict(dropout_ratio=0.5))]
  layers.append(dict(name="loss", type="SoftmaxWithLoss",
                     bottom=["fc8", "label"], top=["loss"]))
  return layers


def write_caffemodel(path, sd, legacy=True):
  path.write_bytes(writer.net_bytes(vgg_caffe_layers(sd), legacy=legacy,
                                    legacy_dims=legacy,
                                    name="VGG_ILSVRC_16_layers"))


# 40 -> pool1..5 of 20, 10, 5, 3, 2 (Caffe rounds 5/2 and 3/2 up), so fc6
# reads a 2x2x16 map; the V1 format is what the published file uses.
@pytest.mark.parametrize("legacy", [True, False])
def test_caffe_vgg16_matches_pytorch_at_every_tap(tmp_path, legacy):
  size = 40
  assert vgg_caffe.pool5_size(size) == 2
  sd = ref.random_vgg16("caffe", WIDTHS, fc=24, classes=10, pool5=2)
  path = tmp_path / "VGG_ILSVRC_16_layers.caffemodel"
  write_caffemodel(path, sd, legacy)
  ported = caffe.FORMAT.convert(str(path), dict(input_size=size))
  assert ported.encoder.arch == "vgg16"
  assert tuple(ported.encoder.widths) == WIDTHS
  assert ported.preprocessing["mean"] == [103.939, 116.779, 123.68]
  assert ported.preprocessing["channel_order"] == "BGR"

  x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
  x = 50 * x  # Caffe space: BGR 0-255 minus the mean.
  model = encoders.from_config(ported.encoder)
  ours = model.apply({"params": ported.params},
                     jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
  with torch.no_grad():
    theirs = ref.caffe_vgg16(sd, x)
  assert set(ours) == set(theirs) == set(vgg.TAPS)
  for name, want in theirs.items():
    want = want.numpy()
    if want.ndim == 4:
      want = want.transpose(0, 2, 3, 1)
    got = np.asarray(ours[name])
    assert got.shape == want.shape, name
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= TOLERANCE, f"{name}: relative error {err:.2e}"


def test_caffe_vgg16_with_the_wrong_input_size_names_sizes_that_fit(tmp_path):
  sd = ref.random_vgg16("caffe", WIDTHS, fc=8, classes=3, pool5=2)
  path = tmp_path / "v.caffemodel"
  write_caffemodel(path, sd)
  with pytest.raises(common.PortError, match="pool5 is 7x7x16") as e:
    caffe.FORMAT.convert(str(path), {})  # The default 224 gives pool5 7x7.
  # pool5 is 2 wide exactly when ceil(n / 32) == 2.
  assert "Input sizes 33 to 64 give that" in str(e.value)


def test_caffe_vgg16_with_a_foreign_layer_is_refused_by_name(tmp_path):
  sd = ref.random_vgg16("caffe", WIDTHS, fc=8, classes=3, pool5=2)
  layers = vgg_caffe_layers(sd)
  layers.insert(2, dict(name="bn1", type="BatchNorm"))
  path = tmp_path / "v.caffemodel"
  path.write_bytes(writer.net_bytes(layers, legacy=False, legacy_dims=False))
  with pytest.raises(common.PortError, match="'bn1'.*BatchNorm.*VGG-16"):
    caffe.FORMAT.convert(str(path), dict(input_size=40))


def test_caffe_vgg16_with_wrong_pooling_is_refused(tmp_path):
  sd = ref.random_vgg16("caffe", WIDTHS, fc=8, classes=3, pool5=2)
  layers = vgg_caffe_layers(sd)
  for layer in layers:
    if layer["name"] == "pool3":
      layer["pool"] = dict(pool=1, kernel_size=2, stride=2)  # AVE
  path = tmp_path / "v.caffemodel"
  path.write_bytes(writer.net_bytes(layers, legacy=True, legacy_dims=True))
  with pytest.raises(common.PortError, match="pool3.*2x2/2 max-pooling"):
    caffe.FORMAT.convert(str(path), dict(input_size=40))


def test_vgg_taps_and_parameters_have_the_published_shapes():
  for arch in ("vgg16", "torchvision_vgg16"):
    model = encoders.from_config(presets.encoder_config(arch))
    shapes = encoders.tap_shapes(model)
    assert set(shapes) == set(encoders.tap_names(arch))
    assert [shapes[f"pool{i}"][:2] for i in range(1, 6)] == [
        (112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
    assert shapes["conv5_3"] == (14, 14, 512) and shapes["prob"] == (1000,)
    params = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"])
    assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
    assert params["fc6"]["kernel"].shape == (7 * 7 * 512, 4096)
    assert sum(np.prod(l.shape) for l in jax.tree.leaves(params)) == 138357544


@pytest.mark.parametrize("arch", ["vgg16", "torchvision_vgg16"])
def test_every_layer_has_a_vgg_tap_and_a_decoder_reaching_224(arch):
  model = encoders.from_config(presets.encoder_config(arch))
  shapes = encoders.tap_shapes(model)
  for layer in encoders.LAYERS:
    cfg = presets.get_config(layer, f"arch={arch}")
    assert cfg.data.crop_size == cfg.encoder.input_size == 224
    assert preflight.config_problems(cfg) == []
    tap = encoders.default_tap(arch, layer)
    resolved = decoder.resolve(cfg.decoder, shapes[tap], 224)
    # Block outputs 112..7 double exactly to 224; fc decoders crop to it.
    assert resolved["output_size"] == 224, (layer, tap)
  assert [encoders.default_tap(arch, f"conv{i}") for i in range(1, 6)] == [
      f"pool{i}" for i in range(1, 6)]


def test_training_feeds_ported_weights_their_own_preprocessing(tmp_path):
  # Ported torchvision weights in the test preset's shape, loaded by setup.
  cfg = presets.get_config("conv3", "test,arch=torchvision_vgg16")
  sd = ref.random_vgg16("torchvision", tuple(cfg.encoder.widths),
                        fc=cfg.encoder.fc_width,
                        classes=cfg.encoder.num_classes)
  torch.save(sd, tmp_path / "vgg16.pth")
  ported = tv_port.FORMAT.convert(str(tmp_path / "vgg16.pth"),
                                  dict(input_size=cfg.encoder.input_size))
  encoder_weights.save(str(tmp_path / "enc"), ported.params, ported.encoder,
                       preprocessing=ported.preprocessing, source=ported.source)
  cfg.encoder.weights = str(tmp_path / "enc")
  assert preflight.config_problems(cfg) == []
  exp = train.setup(cfg)

  # Pipeline (Caffe-space) images in, torchvision's forward pass on the
  # normalised RGB originals as the reference.
  images = np.random.default_rng(0).normal(
      0, 60, (8, 32, 32, 3)).astype(np.float32)
  feats = np.asarray(train.features(exp, exp.encoder_params,
                                    jnp.asarray(images)))
  rgb = (images + np.asarray(cfg.data.mean, np.float32))[..., ::-1] / 255.0
  normalised = (rgb - np.array([0.485, 0.456, 0.406])) / np.array(
      [0.229, 0.224, 0.225])
  with torch.no_grad():
    want = ref.torchvision_vgg16(sd, torch.tensor(
        normalised.transpose(0, 3, 1, 2), dtype=torch.float32))[exp.tap]
  want = want.numpy().transpose(0, 2, 3, 1)
  assert exp.tap == "pool3"
  assert np.abs(feats - want).max() / np.abs(want).max() <= TOLERANCE


def test_registry_knows_every_arch_and_keeps_alexnet_working():
  assert set(encoders.ARCHITECTURES) == {
      "caffenet", "alexnet", "torchvision_alexnet", "vgg16",
      "torchvision_vgg16", "googlenet", "torchvision_googlenet", "resnet50",
      "caffe_resnet50"}
  for arch in encoders.ARCHITECTURES:
    cfg = presets.encoder_config(arch)
    assert set(encoders.ARCHITECTURE_FIELDS[arch]) <= set(cfg)
    assert encoders.tap_names(arch)[-1] == "prob"
  # The Caffe AlexNet module is still reachable directly, as before.
  assert type(alexnet.from_config(presets.encoder_config("caffenet"))) is (
      type(encoders.from_config(presets.encoder_config("caffenet"))))
  assert encoders.default_tap("torchvision_alexnet", "conv2") == "pool2"
  with pytest.raises(ValueError, match="choose one of") as e:
    encoders.check_tap("vgg16", "relu5")
  assert "relu5_3" in str(e.value)
  with pytest.raises(ValueError, match="vgg19"):
    presets.get_config("fc6", "arch=vgg19")


@pytest.mark.parametrize("arch", ["torchvision_alexnet", "torchvision_vgg16"])
def test_floor_pooled_encoders_can_be_trained_under_jit(arch):
  # Training an encoder from scratch differentiates through its pooling.
  cfg = presets.encoder_config(arch)
  cfg.input_size = 64
  cfg.widths = (4, 8, 8, 8, 8)
  cfg.fc_width = 16
  cfg.num_classes = 3
  model = encoders.from_config(cfg)
  x = jnp.ones((1, 64, 64, 3))
  params = model.init(jax.random.key(0), x)["params"]
  grads = jax.jit(jax.grad(
      lambda p: model.apply({"params": p}, x)["fc8"].sum()))(params)
  first = sorted(grads)[0]  # conv1 or conv1_1
  assert all(np.isfinite(g).all() and np.abs(g).max() > 0
             for g in jax.tree.leaves(grads[first]))


# ---------------------------------------------------------------------------
# Batch norm (the VGG-shaped network trained from scratch on Tiny ImageNet).
# ---------------------------------------------------------------------------


def small_vgg(batch_norm: bool) -> vgg.VGG16:
  return vgg.VGG16(input_size=32, widths=(4, 4, 8, 8, 8), fc_width=8,
                   num_classes=3, batch_norm=batch_norm)


def test_batch_norm_vgg_normalises_every_convolution():
  plain, normed = small_vgg(False), small_vgg(True)
  x = jax.random.uniform(jax.random.key(1), (6, 32, 32, 3), maxval=255.0)
  params = normed.init(jax.random.key(0), x)["params"]
  assert {k for k in params if k.startswith("bn")} == {
      f"bn{name[4:]}" for name in vgg.CONV_NAMES}
  convs = {k: v for k, v in params.items() if not k.startswith("bn")}
  raw = plain.apply({"params": convs}, x, until="conv1_1")["conv1_1"]
  # Training: each channel normalised by the batch's own statistics, which
  # are sown for calibration.
  taps, state = normed.apply({"params": params}, x, train=True,
                             until="conv1_1", mutable=["batch_stats"])
  np.testing.assert_allclose(taps["conv1_1"].mean(axis=(0, 1, 2)), 0,
                             atol=1e-3)
  np.testing.assert_allclose(taps["conv1_1"].var(axis=(0, 1, 2)), 1,
                             rtol=1e-3)
  assert set(state["batch_stats"]) == {"bn1_1"}
  # Inference (frozen encoder): the stored statistics.
  mean, var = raw.mean(axis=(0, 1, 2)) + 3.0, raw.var(axis=(0, 1, 2)) * 2
  stored = dict(params, bn1_1=dict(params["bn1_1"], mean=mean, var=var))
  got = normed.apply({"params": stored}, x, until="conv1_1")["conv1_1"]
  np.testing.assert_allclose(got, (raw - mean) / np.sqrt(var + vgg.BN_EPS),
                             rtol=1e-4, atol=1e-4)


def test_vgg_weights_from_before_batch_norm_still_load(tmp_path):
  cfg = presets.encoder_config("vgg16")
  cfg.update(input_size=32, widths=(4, 4, 8, 8, 8), fc_width=8,
             num_classes=3)
  model = encoders.from_config(cfg)
  encoder_weights.save(str(tmp_path / "w"),
                       encoder_weights.init_params(model, 0), cfg,
                       preprocessing=cfg.preprocessing.to_dict(), source={})
  meta_path = tmp_path / "w" / "metadata.json"
  meta = json.loads(meta_path.read_text())
  assert meta["architecture"].pop("batch_norm") is False
  assert meta["architecture"].pop("conv1_stride") == 1
  meta_path.write_text(json.dumps(meta))  # As ported before the fields.
  cfg.weights = str(tmp_path / "w")
  assert encoder_weights.check(cfg) == []
  # ... and not as a batch-norm network, nor saved configs without the
  # field as one.
  cfg.batch_norm = True
  problems = encoder_weights.check(cfg)
  assert len(problems) == 1 and "encoder.batch_norm: config True" in (
      problems[0])
  old = {k: v for k, v in cfg.to_dict().items()
         if k not in ("batch_norm", "conv1_stride")}
  assert encoder_weights.architecture(old)["batch_norm"] is False
  assert encoder_weights.architecture(old)["conv1_stride"] == 1
  cfg.batch_norm, cfg.conv1_stride = False, 2
  problems = encoder_weights.check(cfg)
  assert len(problems) == 1 and "encoder.conv1_stride: config 2" in (
      problems[0])


def test_a_vgg_workdir_from_before_batch_norm_still_resumes(tmp_path):
  config = presets.get_config("conv3", "tiny_imagenet,arch=vgg16")
  config.encoder.batch_norm = False
  config.encoder.weights = "random"
  train._save_config(config, epath.Path(tmp_path))  # pylint: disable=protected-access
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["identity"]["encoder"]["batch_norm"]  # As written before it.
  (tmp_path / "config.json").write_text(json.dumps(saved))
  train.check_workdir(config, tmp_path)
  config.encoder.batch_norm = True
  with pytest.raises(train.WorkdirMismatchError,
                     match="encoder.batch_norm: workdir False, config True"):
    train.check_workdir(config, tmp_path)


def test_conv1_1_at_stride_two_is_the_stride_one_map_at_even_pixels():
  # The same kernels: stride 2 keeps every second row and column of the
  # stride-1 map (3x3, pad 1), so a 64x64 image meets every later layer at
  # the sizes a 32x32 one has at stride 1.
  kwargs = dict(widths=(4, 4, 8, 8, 8), fc_width=8, num_classes=3)
  strided = vgg.VGG16(input_size=64, conv1_stride=2, **kwargs)
  x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3), maxval=255.0)
  params = strided.init(jax.random.key(0), x)["params"]
  full = vgg.VGG16(input_size=64, **kwargs).apply(
      {"params": params}, x, until="conv1_1")["conv1_1"]
  half = strided.apply({"params": params}, x, until="conv1_1")["conv1_1"]
  np.testing.assert_allclose(half, full[:, ::2, ::2], rtol=1e-5, atol=1e-4)
  at_32 = encoders.tap_shapes(vgg.VGG16(input_size=32, **kwargs))
  assert encoders.tap_shapes(strided) == at_32
  assert at_32["pool5"] == (1, 1, 8)
