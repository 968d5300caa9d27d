"""GoogLeNet in both published layouts: ported networks equal an
independent PyTorch forward pass at every tap (reduced widths, and an input
size where ceil-mode pooling rounds up at every pool), torchvision's through
its own preprocessing, and inverters of GoogLeNet taps train end to end."""

import jax
import numpy as np
import pytest
import torch

import reference_googlenet_torch as ref
from inverter import presets, train
from inverter.models import encoders, googlenet, preprocessing
from inverter.port import torchvision as tv_port
from inverter.port.common import PortError

TOLERANCE = 1e-4  # max |ours - reference| / max |reference|, at every tap.
STEM = (8, 8, 12)
MODULES = tuple((4, 4, 6, 2, 3, 3) for _ in range(9))


def assert_every_tap_matches(ours, theirs):
  assert set(ours) == set(theirs) == set(googlenet.TAPS)
  for name, want in theirs.items():
    want = want.detach().numpy()
    if want.ndim == 4:
      want = want.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    got = np.asarray(ours[name])
    assert got.shape == want.shape, name
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= TOLERANCE, f"{name}: relative error {err:.2e}"


def random_pixels(size, seed):
  """RGB 0-255 float images [2, size, size, 3]."""
  return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3))


@pytest.mark.parametrize("size", [64, 67])
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
  assert_every_tap_matches(ours, theirs)


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


@pytest.mark.parametrize("arch", googlenet.ARCHITECTURES)
def test_inverters_of_googlenet_taps_train_end_to_end(tmp_path, arch):
  config = presets.get_config("conv4", f"arch={arch},test")
  config.encoder.tap = "inception_4c"
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics["tap"] == "inception_4c"
  assert np.isfinite(metrics["normalized_error"])
