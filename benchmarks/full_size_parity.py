r"""Full-size GoogLeNet and ResNet-50 parity, once, outside the test suite.

For each of the four formats (torchvision googlenet and resnet50 .pth,
bvlc_googlenet and the authors' ResNet-50 .caffemodel) it writes random
weights of the published network's full size into a real file (torch.save,
or the test suite's Caffe protobuf writer), ports it with the product's
converter (timed), runs our encoder and the independent PyTorch reference
of tests/ on the same 224x224 images, and prints every format's worst tap:
max |ours - reference| / max |reference|, the parity measure of the tests.
The pretrained files themselves cannot be downloaded here; their shapes and
layer names are what this checks at full size.

  python benchmarks/full_size_parity.py [--batch 2]

This is a check run by hand, not product code: it imports torch and tests/.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import caffe_proto_writer as writer  # pylint: disable=g-import-not-at-top
import reference_googlenet_torch as ref_googlenet  # pylint: disable=g-import-not-at-top
import reference_resnet_torch as ref_resnet  # pylint: disable=g-import-not-at-top
from inverter.models import encoders, googlenet, preprocessing  # pylint: disable=g-import-not-at-top
from inverter.port import caffe as caffe_port  # pylint: disable=g-import-not-at-top
from inverter.port import googlenet_caffe, resnet_caffe  # pylint: disable=g-import-not-at-top,unused-import
from inverter.port import torchvision as tv_port  # pylint: disable=g-import-not-at-top

SIZE = 224
RESNET50 = dict(stem=64, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3))


def worst_tap(ours, theirs) -> tuple[str, float]:
  worst = ("", 0.0)
  for name, want in theirs.items():
    want = want.detach().numpy()
    if want.ndim == 4:
      want = want.transpose(0, 2, 3, 1)
    got = np.asarray(ours[name])
    assert got.shape == want.shape, (name, got.shape, want.shape)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    worst = max(worst, (name, err), key=lambda t: t[1])
  return worst


def run(name, write, convert, reference, adapt, batch, tmp):
  path = write(tmp)
  start = time.perf_counter()
  ported = convert(str(path))
  port_s = time.perf_counter() - start
  pixels = np.random.default_rng(0).uniform(0, 255, (batch, SIZE, SIZE, 3))
  model = encoders.from_config(ported.encoder)
  ours_in, ref_in = adapt(pixels, ported.encoder)
  ours = model.apply({"params": ported.params}, jax.numpy.asarray(ours_in))
  with torch.no_grad():
    theirs = reference(torch.tensor(ref_in.transpose(0, 3, 1, 2),
                                    dtype=torch.float32))
  tap, err = worst_tap(ours, theirs)
  size_mb = os.path.getsize(path) / 1e6
  print(f"{name:24s} {size_mb:7.1f} MB  port {port_s:6.1f} s  worst tap"
        f" {tap:14s} {err:.1e}  ({len(theirs)} taps)", flush=True)


def caffe_input(pixels, cfg):
  x = (pixels[..., ::-1] - np.asarray(cfg.preprocessing.mean)).astype(
      np.float32)
  return x, x


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=2)
  args = parser.parse_args()
  print(f"Full-size parity at {SIZE}x{SIZE}, batch {args.batch}; load"
        f" average {os.getloadavg()[0]:.2f}")
  tmp = pathlib.Path(tempfile.mkdtemp())
  stem, modules = googlenet.STEM_WIDTHS, googlenet.INCEPTION_WIDTHS

  sd_tv_g = ref_googlenet.random_torchvision_googlenet(stem, modules, 1000)

  def tv_googlenet_input(pixels, cfg):
    data = dict(mean=(104.0, 117.0, 123.0), mean_file=None)
    caffe_space = (pixels[..., ::-1] - np.asarray(data["mean"])).astype(
        np.float32)
    ours = np.asarray(preprocessing.encoder_input_fn(cfg.preprocessing, data)(
        jax.numpy.asarray(caffe_space)))
    theirs = ((pixels / 255 - ref_googlenet.IMAGENET_MEAN)
              / ref_googlenet.IMAGENET_STD).astype(np.float32)
    return ours, theirs

  def save(sd, name):
    def write(directory):
      torch.save(sd, directory / name)
      return directory / name
    return write

  run("torchvision googlenet", save(sd_tv_g, "googlenet.pth"),
      lambda p: tv_port.FORMAT.convert(p, {}),
      lambda x: ref_googlenet.torchvision_googlenet(sd_tv_g, x),
      tv_googlenet_input, args.batch, tmp)

  sd_c_g = ref_googlenet.random_caffe_googlenet(stem, modules, 1000)

  def write_caffe_googlenet(directory):
    path = directory / "bvlc_googlenet.caffemodel"
    path.write_bytes(writer.net_bytes(writer.googlenet_layers(
        {k: v.numpy() for k, v in sd_c_g.items()}, 7),
                                      legacy=False, legacy_dims=False))
    return path

  run("bvlc_googlenet", write_caffe_googlenet,
      lambda p: caffe_port.FORMAT.convert(p, {}),
      lambda x: ref_googlenet.caffe_googlenet(sd_c_g, x), caffe_input,
      args.batch, tmp)

  sd_tv_r = ref_resnet.random_torchvision_resnet(
      RESNET50["stem"], RESNET50["widths"], RESNET50["blocks"], 1000)

  def tv_resnet_input(pixels, cfg):
    del cfg
    x = ((pixels / 255 - ref_googlenet.IMAGENET_MEAN)
         / ref_googlenet.IMAGENET_STD).astype(np.float32)
    return x, x

  run("torchvision resnet50", save(sd_tv_r, "resnet50.pth"),
      lambda p: tv_port.FORMAT.convert(p, {}),
      lambda x: ref_resnet.torchvision_resnet(sd_tv_r, x, RESNET50["blocks"]),
      tv_resnet_input, args.batch, tmp)

  sd_c_r = ref_resnet.random_caffe_resnet(
      RESNET50["stem"], RESNET50["widths"], RESNET50["blocks"], 1000)

  def write_caffe_resnet(directory):
    path = directory / "ResNet-50-model.caffemodel"
    path.write_bytes(writer.net_bytes(writer.resnet_layers(
        {k: v.numpy() for k, v in sd_c_r.items()}, RESNET50["blocks"], 7),
                                      legacy=False, legacy_dims=False))
    return path

  run("caffe resnet50", write_caffe_resnet,
      lambda p: caffe_port.FORMAT.convert(p, {}),
      lambda x: ref_resnet.caffe_resnet(sd_c_r, x, RESNET50["blocks"]),
      caffe_input, args.batch, tmp)


if __name__ == "__main__":
  main()
