"""`inverter.load`: a checkpoint trained on 8 devices restores on any device
count and turns uint8 images of any size into features and reconstructions."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import inverter
from conftest import REPO_ROOT
from inverter import encoder_weights, images, loading
import tiny_inverters

# Run in a subprocess with ONE device: restore each inverter, reconstruct,
# save everything.
_ONE_DEVICE = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
import jax, numpy as np, inverter
images_file, out_dir, *paths = sys.argv[1:]
images = list(np.load(images_file).values())
assert jax.device_count() == 1
for i, path in enumerate(paths):
  inv = inverter.load(path)
  flat = {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(inv.params)}
  x = inv.preprocess(images)
  np.savez(os.path.join(out_dir, f"{i}.npz"), recon=inv.reconstruct(images),
           decoded=inv.decode(inv.encode(x)), features=inv.features(images),
           **{"param" + k: v for k, v in flat.items()})
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return tiny_inverters.trained(tmp_path_factory)


@pytest.fixture(scope="module")
def restored(tiny):
  """name -> inverter.load(its workdir), each restored once per module."""
  cache = {}

  def get(name):
    if name not in cache:
      cache[name] = inverter.load(tiny[name])
    return cache[name]

  return get


def photos(count=5, seed=0):
  """uint8 RGB images of assorted sizes."""
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, size=(30 + 7 * i, 45 + 3 * i, 3),
                       dtype=np.uint8) for i in range(count)]


ONE_DEVICE_NAMES = ("conv1", "fc8")


@pytest.fixture(scope="module")
def one_device(tiny, tmp_path_factory):
  """{name: what the 1-device subprocess computed}, for 11 photos (more
  than one batch of 8, the last one padded)."""
  out = tmp_path_factory.mktemp("one_device")
  np.savez(out / "images.npz", *photos(11))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")
  proc = subprocess.run(
      [sys.executable, "-c", _ONE_DEVICE, str(out / "images.npz"), str(out),
       *(tiny[n] for n in ONE_DEVICE_NAMES)],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {n: np.load(out / f"{i}.npz") for i, n in enumerate(ONE_DEVICE_NAMES)}


@pytest.mark.parametrize("name", ONE_DEVICE_NAMES)
def test_eight_device_checkpoint_restores_identically_on_one_device(
    one_device, restored, name):
  assert jax.device_count() == 8  # training ran on these (conftest)
  images = photos(11)
  one = one_device[name]

  inv = restored(name)
  params = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(inv.params)}
  assert {"param" + k for k in params} == {k for k in one if
                                           k.startswith("param")}
  for key, value in params.items():
    np.testing.assert_array_equal(one["param" + key], value)
  # The same programs at another per-device batch size may round differently
  # in the last float bits, nothing more.
  np.testing.assert_allclose(one["features"], inv.features(images),
                             rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(one["decoded"],
                             inv.decode(inv.encode(inv.preprocess(images))),
                             rtol=1e-5, atol=1e-3)
  recon = inv.reconstruct(images)
  assert recon.dtype == np.uint8
  assert np.abs(one["recon"].astype(int) - recon).max() <= 1
  assert np.mean(one["recon"] != recon) < 1e-3


def test_features_invert_and_reconstruct_take_any_uint8_images(restored):
  inv = restored("fc8")
  assert (inv.layer, inv.tap, inv.step) == ("fc8", "fc8", 4)
  rgb = photos(1)[0]
  gray = rgb[..., 0]
  rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], axis=-1)
  images = [rgb, gray, rgba]
  feats = inv.features(images)
  assert feats.shape == (3, *inv.feature_shape)
  recon = inv.reconstruct(images)
  assert recon.shape == (3, inv.output_size, inv.output_size, 3)
  assert recon.dtype == np.uint8
  np.testing.assert_array_equal(inv.invert(feats), recon)
  np.testing.assert_array_equal(recon[0], recon[2])  # alpha is dropped
  # One image in, one result out, the same as in a batch.
  np.testing.assert_array_equal(inv.features(rgb), feats[0])
  np.testing.assert_array_equal(inv.reconstruct(rgb), recon[0])
  np.testing.assert_array_equal(inv.invert(feats[0]), recon[0])
  # A batch array works too, and a result does not depend on its batch.
  batch = np.stack([rgb] * 3)
  np.testing.assert_array_equal(inv.reconstruct(batch)[1], recon[0])



def test_file_paths_and_pil_images_give_what_their_pixels_give(restored,
                                                              tmp_path):
  inv = restored("conv1")
  rgb, other = photos(2, seed=3)
  png = tmp_path / "photo.png"  # lossless, so the pixels are rgb's
  Image.fromarray(rgb).save(png)
  expected = inv.reconstruct([rgb, other])
  # A path string is one image, not a list of characters.
  np.testing.assert_array_equal(inv.reconstruct(str(png)), expected[0])
  np.testing.assert_array_equal(inv.reconstruct(png), expected[0])
  np.testing.assert_array_equal(inv.features(str(png)),
                                inv.features(rgb))
  mixed = inv.reconstruct([str(png), Image.fromarray(other)])
  np.testing.assert_array_equal(mixed, expected)
  # PIL images of other modes are converted like arrays are.
  np.testing.assert_array_equal(
      inv.reconstruct(Image.fromarray(rgb).convert("RGBA")), expected[0])


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 12, 3), np.uint8), r"Image 0 is empty: shape \(0, 12, 3\)"),
    (np.zeros((12, 12, 2), np.uint8), r"Image 0 has shape \(12, 12, 2\)"),
    (np.zeros((12, 12, 5), np.uint8), r"Image 0 has shape \(12, 12, 5\)"),
    (np.zeros((12, 12, 3), np.float32), r"Image 0 has dtype float32"),
    (np.zeros((2, 2, 12, 12, 3), np.uint8), r"shape \(2, 2, 12, 12, 3\)"),
    ([], "no images given"),
])
def test_unusable_arrays_are_refused_saying_what_was_passed(restored, bad,
                                                            match):
  with pytest.raises(images.ImageInputError, match=match):
    restored("conv1").reconstruct(bad)


def test_missing_and_corrupt_files_are_refused_by_name(restored, tmp_path):
  inv = restored("conv1")
  missing = tmp_path / "missing.jpg"
  with pytest.raises(images.ImageInputError, match=str(missing)):
    inv.reconstruct(str(missing))
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
  with pytest.raises(images.ImageInputError,
                     match=f"{corrupt} is not a readable image"):
    inv.reconstruct([photos(1)[0], str(corrupt)])

def test_the_top5_inverter_sees_top5_features(restored):
  inv = restored("fc8_top5")
  assert inv.feature_transform == "top5" and inv.name == "fc8_top5"
  x = inv.preprocess(photos(4))
  assert np.all((inv.encode(x) != 0).sum(axis=1) == 5)
  assert np.all((inv.encode(x, raw=True) != 0).sum(axis=1) == 10)


def test_bad_input_is_refused_with_what_to_do(tiny, restored, tmp_path):
  with pytest.raises(loading.NotAnInverterError, match="config.json"):
    inverter.load(tmp_path)
  # A workdir whose encoder weights are not where training found them.
  moved = tmp_path / "moved"
  moved.mkdir()
  saved = json.loads(open(os.path.join(tiny["fc8"], "config.json")).read())
  saved["config"]["encoder"]["weights"] = str(tmp_path / "elsewhere")
  (moved / "config.json").write_text(json.dumps(saved))
  with pytest.raises(encoder_weights.EncoderWeightsError,
                     match="encoder_weights="):
    inverter.load(moved)
  inv = restored("fc8")
  with pytest.raises(ValueError, match="uint8"):
    inv.features(np.zeros((20, 20, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[N, 10\]"):
    inv.invert(np.zeros((2, 7), np.float32))
