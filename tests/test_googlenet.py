"""GoogLeNet in both published layouts: ported networks equal an
independent PyTorch forward pass at every tap (reduced widths, and an input
size where ceil-mode pooling rounds up at every pool), torchvision's through
its own preprocessing, and inverters of GoogLeNet taps train end to end."""

import jax
import numpy as np
import pytest
import torch

import caffe_proto_writer as writer
import reference_googlenet_torch as ref
from conftest import assert_every_tap_matches
from inverter import presets, train
from inverter.models import encoders, googlenet, preprocessing
from inverter.port import caffe as caffe_port
from inverter.port import googlenet_caffe  # pylint: disable=unused-import
from inverter.port import torchvision as tv_port
from inverter.port.common import PortError

STEM = (8, 8, 12)
MODULES = tuple((4, 4, 6, 2, 3, 3) for _ in range(9))


def random_pixels(size, seed):
  """RGB 0-255 float images [2, size, size, 3]."""
  return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3))


# 67 pixels: conv1 gives 34, which ceil-rounded pool1 takes to 17 (rounding
# down would give 16).
@pytest.mark.parametrize("size", [67])
def test_torchvision_googlenet_ports_and_matches_pytorch_at_every_tap(
    tmp_path, size):
  sd = ref.random_torchvision_googlenet(STEM, MODULES, classes=10)
  path = tmp_path / "googlenet.pth"
  torch.save(sd, path)
  ported = tv_port.FORMAT.convert(str(path), {"input_size": size})
  cfg = ported.encoder
  assert cfg.arch == "torchvision_googlenet"
  assert (cfg.stem_widths, cfg.inception_widths) == (STEM, MODULES)
  assert dict(cfg.preprocessing) == dict(
      preprocessing.TORCHVISION_GOOGLENET)
  pixels = random_pixels(size, seed=1)
  # Ours: the pipeline's Caffe-space image through the encoder's adapter.
  data = dict(mean=(100.0, 110.0, 120.0), mean_file=None)
  adapt = preprocessing.encoder_input_fn(cfg.preprocessing, data)
  caffe_space = (pixels[..., ::-1] - np.asarray(data["mean"])).astype(
      np.float32)
  model = encoders.from_config(cfg)
  ours = model.apply({"params": ported.params},
                     adapt(jax.numpy.asarray(caffe_space)))
  # Theirs: ImageNet-normalised RGB, then torchvision's transform_input.
  normalised = (pixels / 255 - ref.IMAGENET_MEAN) / ref.IMAGENET_STD
  x = torch.tensor(normalised.transpose(0, 3, 1, 2), dtype=torch.float32)
  with torch.no_grad():
    theirs = ref.torchvision_googlenet(sd, x)
  assert_every_tap_matches(ours, theirs, googlenet.TAPS)


def write_caffe_googlenet(path, size, **options):
  sd = ref.random_caffe_googlenet(STEM, MODULES, classes=10)
  model = googlenet.GoogLeNet(input_size=size, stem_widths=STEM,
                              inception_widths=MODULES, num_classes=10)
  last = encoders.tap_shapes(model)["inception_5b"][0]
  layers = writer.googlenet_layers({k: v.numpy() for k, v in sd.items()},
                                   last, **options)
  path.write_bytes(writer.net_bytes(layers, legacy=False, legacy_dims=False))
  return sd, layers


@pytest.mark.parametrize("size", [67])
def test_caffe_googlenet_ports_and_matches_pytorch_at_every_tap(tmp_path,
                                                                size):
  path = tmp_path / "googlenet.caffemodel"
  sd, _ = write_caffe_googlenet(path, size)
  ported = caffe_port.FORMAT.convert(str(path), {"input_size": size})
  cfg = ported.encoder
  assert cfg.arch == "googlenet"
  assert (cfg.stem_widths, cfg.inception_widths) == (STEM, MODULES)
  # The training net's auxiliary classifiers are skipped, with a note.
  assert any("loss1/conv" in w and "auxiliary" in w for w in ported.warnings)
  pixels = random_pixels(size, seed=2)
  x = (pixels[..., ::-1] - (104.0, 117.0, 123.0)).astype(np.float32)
  model = encoders.from_config(cfg)
  ours = model.apply({"params": ported.params}, jax.numpy.asarray(x))
  with torch.no_grad():
    theirs = ref.caffe_googlenet(sd, torch.tensor(x.transpose(0, 3, 1, 2)))
  assert_every_tap_matches(ours, theirs, googlenet.TAPS)


def test_a_caffe_googlenet_with_another_lrn_or_order_is_refused(tmp_path):
  path = tmp_path / "googlenet.caffemodel"
  sd, layers = write_caffe_googlenet(path, 64, with_aux=False)
  for change, message in [
      (lambda l: l["lrn"].update(local_size=3) if l["name"] == "conv2/norm2"
       else None, "layer 'conv2/norm2' is an LRN"),
      (lambda l: l["bottom"].reverse() if l["name"] == "inception_4b/output"
       else None, "inception_4b/output concatenates")]:
    changed = [dict(l, **{k: (dict(v) if isinstance(v, dict) else
                              list(v) if isinstance(v, list) else v)
                          for k, v in l.items()}) for l in layers]
    for layer in changed:
      change(layer)
    path.write_bytes(writer.net_bytes(changed, legacy=False,
                                      legacy_dims=False))
    with pytest.raises(PortError, match=message):
      caffe_port.FORMAT.convert(str(path), {"input_size": 64})


def test_a_damaged_googlenet_state_dict_is_refused_by_name(tmp_path):
  sd = ref.random_torchvision_googlenet(STEM, MODULES, classes=10)
  wrong = dict(sd)
  wrong["inception4a.branch2.1.conv.weight"] = torch.zeros(6, 4, 5, 5)
  for state, message in [
      (wrong, r"inception4a.branch2.1.conv.weight is 5x5 over 4 channels;"
              r" the network has 3x3 over 4"),
      ({k: v for k, v in sd.items() if "inception5b.branch4" not in k},
       "lacks inception5b.branch4.1.conv.weight"),
      ({**sd, "inception3a.branch5.conv.weight": torch.zeros(1)},
       "inception3a.branch5.conv.weight")]:
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(PortError, match=message):
      tv_port.FORMAT.convert(str(path), {})


@pytest.mark.parametrize("arch", googlenet.ARCHITECTURES)
def test_the_full_networks_have_the_published_tap_shapes(arch):
  shapes = encoders.tap_shapes(encoders.from_config(
      presets.encoder_config(arch)))
  assert [shapes[t] for t in ("conv1", "conv2", "inception_3b",
                              "inception_4e", "inception_5b")] == [
      (56, 56, 64), (28, 28, 192), (28, 28, 480), (14, 14, 832),
      (7, 7, 1024)]
  assert shapes["pool5"] == (1024,) and shapes["logits"] == (1000,)


@pytest.mark.parametrize("arch", [googlenet.TORCHVISION_ARCH])
def test_inverters_of_googlenet_taps_train_end_to_end(tmp_path, arch):
  config = presets.get_config("conv4", f"arch={arch},test")
  config.encoder.tap = "inception_4c"
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics["tap"] == "inception_4c"
  assert np.isfinite(metrics["normalized_error"])
