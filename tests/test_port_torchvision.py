"""Porting torchvision .pth files without torch: every tap of the ported
encoder equals an independent PyTorch forward pass, the encoder sees
torchvision's own preprocessing, and unsafe or damaged files are refused."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
import torch

import reference_torchvision_torch as ref
from conftest import assert_every_tap_matches
from inverter import encoder_weights, presets
from inverter import data as data_lib
from inverter.models import encoders, preprocessing
from inverter.port import common, torch_pickle
from inverter.port import torchvision as tv_port

def port(sd, path, legacy=False, **options):
  torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
  assert tv_port.FORMAT.sniff(str(path))
  return tv_port.FORMAT.convert(str(path), options)


def run_both(ported, sd, reference, size, seed=0):
  gen = torch.Generator().manual_seed(seed)
  x = torch.randn(2, 3, size, size, generator=gen)
  model = encoders.from_config(ported.encoder)
  ours = model.apply({"params": ported.params},
                     jax.numpy.asarray(x.numpy().transpose(0, 2, 3, 1)))
  with torch.no_grad():
    theirs = reference(sd, x)
  return ours, theirs


ALEXNET_WIDTHS = (16, 24, 32, 24, 24)


@pytest.fixture(scope="module")
def alexnet_sd():
  return ref.random_torchvision_alexnet(ALEXNET_WIDTHS, fc=48, classes=10)


# pool5 is 1, 4 and 7 pixels wide: the adaptive pool to 6x6 replicates,
# averages overlapping bins upwards, and averages overlapping bins down.
@pytest.mark.parametrize("size", [67, 163, 255])
def test_torchvision_alexnet_matches_pytorch_at_every_tap(tmp_path, alexnet_sd,
                                                          size):
  ported = port(alexnet_sd, tmp_path / "alexnet.pth", input_size=size)
  assert ported.encoder.arch == "torchvision_alexnet"
  assert tuple(ported.encoder.widths) == ALEXNET_WIDTHS
  assert ported.encoder.avgpool_size == 6
  ours, theirs = run_both(ported, alexnet_sd, ref.torchvision_alexnet, size)
  assert_every_tap_matches(ours, theirs,
                           encoders.tap_names("torchvision_alexnet"))


VGG_WIDTHS = (4, 8, 8, 16, 16)


# pool5 1x1 (replicated to 7x7), 6x6 (overlapping bins; floor-rounded
# pooling of odd maps on the way), 7x7 (the identity, as at 224).
@pytest.mark.parametrize("size,legacy", [(32, False), (200, True),
                                         (224, False)])
def test_torchvision_vgg16_matches_pytorch_at_every_tap(tmp_path, size,
                                                        legacy):
  sd = ref.random_vgg16("torchvision", VGG_WIDTHS, fc=32, classes=10)
  ported = port(sd, tmp_path / "vgg16.pth", legacy=legacy, input_size=size)
  assert ported.encoder.arch == "torchvision_vgg16"
  assert tuple(ported.encoder.widths) == VGG_WIDTHS
  ours, theirs = run_both(ported, sd, ref.torchvision_vgg16, size)
  assert_every_tap_matches(ours, theirs,
                           encoders.tap_names("torchvision_vgg16"))


def test_full_size_ported_config_is_the_preset_and_loads(tmp_path,
                                                         alexnet_sd):
  # Full-size key names and shapes, except narrower widths to stay fast:
  # everything but widths/fc must come out as the preset says.
  ported = port(alexnet_sd, tmp_path / "a.pth")
  preset = presets.encoder_config("torchvision_alexnet")
  for field in ("input_size", "conv1_kernel", "conv1_stride", "conv1_padding",
                "avgpool_size"):
    assert ported.encoder[field] == preset[field], field
  assert ported.encoder.preprocessing == preset.preprocessing
  assert ported.preprocessing["channel_order"] == "RGB"
  assert ported.source["sha1"] == common.sha1_file(tmp_path / "a.pth")

  out = tmp_path / "enc"
  encoder_weights.save(str(out), ported.params, ported.encoder,
                       preprocessing=ported.preprocessing,
                       source=ported.source)
  cfg = ported.encoder
  cfg.weights = str(out)
  assert encoder_weights.check(cfg) == []
  loaded = encoder_weights.load(cfg, encoders.from_config(cfg))
  jax.tree.map(np.testing.assert_array_equal, loaded, ported.params)

  # The same kernels fed Caffe-style are another encoder: refused by field.
  cfg.preprocessing.channel_order = "BGR"
  [problem] = encoder_weights.check(cfg)
  assert "encoder.preprocessing" in problem and "'RGB'" in problem


def test_other_networks_are_refused_by_name(tmp_path, alexnet_sd):
  bn = dict(alexnet_sd, **{"features.1.running_mean": torch.zeros(16)})
  with pytest.raises(common.PortError, match="batch-normalised"):
    port(bn, tmp_path / "bn.pth")
  vgg11ish = {k: v for k, v in ref.random_vgg16(
      "torchvision", VGG_WIDTHS, fc=8, classes=2).items()
      if not k.startswith("features.28")}
  with pytest.raises(common.PortError, match="12 conv layers"):
    port(vgg11ish, tmp_path / "v.pth")
  with pytest.raises(common.PortError, match="not --arch=torchvision_vgg16"):
    port(alexnet_sd, tmp_path / "a.pth", arch="torchvision_vgg16")


class _RunsACommand:
  """Pickles as a call of os.system: what a malicious .pth would hold."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_with_a_forbidden_global_is_refused_unexecuted(tmp_path,
                                                              legacy):
  marker = tmp_path / "executed"
  path = tmp_path / "evil.pth"
  torch.save({"features.0.weight": torch.zeros(2),
              "payload": _RunsACommand(marker)}, path,
             _use_new_zipfile_serialization=not legacy)
  with pytest.raises(common.PortError, match=r"refusing to unpickle the"
                     r" global (posix|os)\.system"):
    torch_pickle.load_state_dict(path)
  assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file_is_a_clear_error(tmp_path, alexnet_sd, legacy):
  path = tmp_path / "a.pth"
  torch.save(alexnet_sd, path, _use_new_zipfile_serialization=not legacy)
  data = path.read_bytes()
  for cut in (len(data) // 2, len(data) - 16):
    path.write_bytes(data[:cut])
    with pytest.raises(common.PortError, match="truncated"):
      tv_port.FORMAT.convert(str(path), {})


def test_torch_pickle_reads_views_dtypes_and_both_formats(tmp_path):
  base = torch.randn(5, 7)
  sd = {"a": base, "a_t": base.t(), "part": base[1:3, 2:],
        "long": torch.arange(4), "half": torch.randn(3).half(),
        "bf16": torch.randn(3).bfloat16(), "empty": torch.zeros(0, 2)}
  for legacy in (False, True):
    torch.save(sd, tmp_path / "t.pth",
               _use_new_zipfile_serialization=not legacy)
    got = torch_pickle.load_state_dict(tmp_path / "t.pth")
    for key, value in sd.items():
      np.testing.assert_array_equal(got[key], value.float().numpy()
                                    if key == "bf16" else value.numpy())


def test_adapter_gives_torchvision_normalisation_of_the_original_image():
  rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
  cfg = presets.get_config("fc6", "test,arch=torchvision_alexnet")
  # Any pipeline mean must do: the adapter adds it back.
  cfg.data.mean = (90.0, 100.0, 110.0)
  cfg.data.resize_size = cfg.data.crop_size = 16
  caffe_space = data_lib.caffe_preprocess(
      tf.constant(rgb), data=cfg.data, train=False).numpy()
  adapt = preprocessing.encoder_input_fn(cfg.encoder.preprocessing, cfg.data)
  got = np.asarray(adapt(caffe_space[None]))[0]
  mean = np.array([0.485, 0.456, 0.406])
  std = np.array([0.229, 0.224, 0.225])
  want = (rgb / 255.0 - mean) / std
  np.testing.assert_allclose(got, want, atol=1e-5)

  # Caffe encoders see the pipeline's images unchanged.
  caffe = presets.get_config("fc6", "test")
  identity = preprocessing.encoder_input_fn(caffe.encoder.preprocessing,
                                            caffe.data)
  np.testing.assert_array_equal(np.asarray(identity(caffe_space)), caffe_space)


def test_mean_file_with_a_normalising_encoder_is_a_config_problem():
  cfg = presets.get_config("fc6", "test,arch=torchvision_vgg16")
  cfg.data.mean_file = "/some/mean.npy"
  [problem] = preprocessing.problems(cfg.encoder.preprocessing, cfg.data)
  assert "data.mean_file" in problem and "unset" in problem


def test_cli_finds_each_new_format_by_content(tmp_path, alexnet_sd):
  # `python -m inverter.port FILE` must recognise a torchvision .pth and a
  # Caffe VGG-16 without --format, and write loadable encoder weights.
  import test_vgg
  from inverter.port import __main__ as cli

  pth = tmp_path / "alexnet.pth"
  torch.save(alexnet_sd, pth)
  vgg = tmp_path / "vgg.caffemodel"
  test_vgg.write_caffemodel(
      vgg, ref.random_vgg16("caffe", VGG_WIDTHS, fc=32, classes=10))
  for source, arch, size in ((pth, "torchvision_alexnet", 224),
                             (vgg, "vgg16", 224)):
    out = tmp_path / f"enc_{arch}"
    assert cli.main([str(source), "--out", str(out),
                     "--input_size", str(size)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["architecture"]["arch"] == arch
    assert meta["source"]["sha1"] == common.sha1_file(source)
