"""ResNet-50 in both published layouts: the ported torchvision network
equals an independent PyTorch forward pass at every tap (reduced widths, at
an input size where the two layouts' pooling rounds differently too), and
inverters of ResNet taps train end to end."""

import jax
import numpy as np
import pytest
import torch

import caffe_proto_writer as writer
import reference_resnet_torch as ref
from conftest import assert_every_tap_matches
from inverter import presets, train
from inverter.models import encoders, resnet
from inverter.port import caffe as caffe_port
from inverter.port import resnet_caffe  # pylint: disable=unused-import
from inverter.port import torchvision as tv_port
from inverter.port.common import PortError

def apply(encoder_cfg, params, x):
  model = encoders.from_config(encoder_cfg)
  return model.apply({"params": params},
                     jax.numpy.asarray(x.numpy().transpose(0, 2, 3, 1)))


# 65 pixels: conv1 gives 33, which torchvision's padded pool1 takes to 17
# and Caffe's ceil-rounded one to 16.
@pytest.mark.parametrize("bottleneck,blocks,size", [(True, (2, 1, 2, 1), 65),
                                                    (False, (2, 2, 1, 1), 64)])
def test_torchvision_resnet_ports_and_matches_pytorch_at_every_tap(
    tmp_path, bottleneck, blocks, size):
  sd = ref.random_torchvision_resnet(8, (4, 8, 8, 16), blocks, classes=10,
                                     bottleneck=bottleneck)
  path = tmp_path / "resnet.pth"
  torch.save(sd, path)
  assert tv_port.FORMAT.sniff(str(path))
  ported = tv_port.FORMAT.convert(str(path), {"input_size": size})
  cfg = ported.encoder
  assert (cfg.arch, cfg.stem_width, cfg.widths, cfg.blocks, cfg.block) == (
      "resnet50", 8, (4, 8, 8, 16), blocks,
      "bottleneck" if bottleneck else "basic")
  x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    theirs = ref.torchvision_resnet(sd, x, blocks, bottleneck)
  assert_every_tap_matches(apply(cfg, ported.params, x), theirs,
                           encoders.tap_names(cfg.arch, cfg))


@pytest.mark.parametrize("size", [65])
def test_caffe_resnet_ports_and_matches_pytorch_at_every_tap(tmp_path, size):
  blocks = (2, 1, 2, 1)
  sd = ref.random_caffe_resnet(8, (4, 8, 8, 16), blocks, classes=10)
  model = resnet.ResNet(arch=resnet.CAFFE_ARCH, input_size=size, stem_width=8,
                        widths=(4, 8, 8, 16), blocks=blocks)
  last = encoders.tap_shapes(model)["res5"][0]
  path = tmp_path / "resnet.caffemodel"
  path.write_bytes(writer.net_bytes(
      writer.resnet_layers({k: v.numpy() for k, v in sd.items()}, blocks,
                           last),
      legacy=False, legacy_dims=False))
  assert caffe_port.FORMAT.sniff(str(path))
  ported = caffe_port.FORMAT.convert(str(path), {"input_size": size})
  cfg = ported.encoder
  assert (cfg.arch, cfg.stem_width, cfg.widths, cfg.blocks) == (
      "caffe_resnet50", 8, (4, 8, 8, 16), blocks)
  x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    theirs = ref.caffe_resnet(sd, x, blocks)
  assert_every_tap_matches(apply(cfg, ported.params, x), theirs,
                           encoders.tap_names(cfg.arch, cfg))
  # pool5 must cover the whole last map at the input size given.
  with pytest.raises(PortError, match="pool5 must average the whole"):
    caffe_port.FORMAT.convert(str(path), {"input_size": size + 64})


def test_a_damaged_resnet_state_dict_is_refused_by_name(tmp_path):
  sd = ref.random_torchvision_resnet(8, (4, 8, 8, 16), (1, 1, 1, 1), 10)
  broken = dict(sd)
  del broken["layer3.0.downsample.0.weight"]
  del broken["layer3.0.downsample.1.weight"]
  for key in list(broken):
    if key.startswith("layer3.0.downsample"):
      del broken[key]
  for state, message in [
      (broken, "layer3.0 changes the shape but has no downsample"),
      ({**sd, "layer1.0.se.weight": torch.zeros(1)}, "layer1.0.se.weight"),
      ({k: v for k, v in sd.items() if k != "fc.bias"}, "lacks fc.bias")]:
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(PortError, match=message):
      tv_port.FORMAT.convert(str(path), {})


@pytest.mark.parametrize("arch", resnet.ARCHITECTURES)
def test_both_layouts_pool_where_their_published_networks_do(arch):
  cfg = presets.encoder_config(arch)
  shapes = encoders.tap_shapes(encoders.from_config(cfg))
  assert shapes["conv1"] == (56, 56, 64)
  assert [shapes[f"res{i}"] for i in (2, 3, 4, 5)] == [
      (56, 56, 256), (28, 28, 512), (14, 14, 1024), (7, 7, 2048)]
  assert shapes["pool5"] == (2048,) and shapes["prob"] == (1000,)
  # At 225 (conv1: 113) the stems differ: torchvision pads and rounds down
  # ((113 + 2 - 3) // 2 + 1), Caffe does not pad and rounds up
  # (ceil((113 - 3) / 2) + 1).
  cfg.input_size = 225
  shapes = encoders.tap_shapes(encoders.from_config(cfg))
  assert shapes["conv1"][0] == {"resnet50": 57, "caffe_resnet50": 56}[arch]


@pytest.mark.parametrize("arch", [resnet.CAFFE_ARCH])
def test_inverters_of_resnet_taps_train_end_to_end(tmp_path, arch):
  config = presets.get_config("conv4", f"arch={arch},test")
  config.encoder.tap = "res3a"
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics["tap"] == "res3a" and np.isfinite(metrics["normalized_error"])
  assert metrics["step"] == config.num_train_steps
