"""`python -m inverter.reconstruct`: a researcher's own photos through
trained inverters, by the decoder or by optimisation, as one figure; bad
images, workdirs and options stop it before any work with status 2."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
import tiny_inverters


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return tiny_inverters.trained(tmp_path_factory)


@pytest.fixture
def photos(tmp_path):
  rng = np.random.default_rng(0)
  paths = []
  for i, size in enumerate([(40, 60), (50, 50)]):
    path = tmp_path / f"photo{i}.jpg"
    Image.fromarray(rng.integers(0, 256, (*size, 3), np.uint8)).save(path)
    paths.append(str(path))
  return paths


def reconstruct(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "inverter.reconstruct", *args],
                        cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("method,extra", [
    ("decoder", ()),
    ("hybrid", ("--iterations=3", "--final_iterations=1")),
])
def test_writes_a_row_per_image_and_a_column_per_inverter(tiny, photos,
                                                          tmp_path, method,
                                                          extra):
  out = tmp_path / "figure.png"
  proc = reconstruct(*photos, f"--inverters={tiny['conv1']},{tiny['fc8']}",
                     f"--method={method}", f"--out={out}", *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"2 image(s) x 2 inverter(s), method {method}" in proc.stdout
  with Image.open(out) as figure:
    width, height = figure.size
  # Cells of at least 96 pixels: input, conv1, fc8 across; two rows down.
  assert width >= 3 * 96 and 2 * 96 <= height < 3 * 96 + 40
  if method == "hybrid":
    assert "optimised 2/2 images" in proc.stderr


def test_bad_input_stops_it_before_any_work(tiny, photos, tmp_path):
  out = tmp_path / "figure.png"
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(b"not a jpeg")
  cases = [
      ((*photos, str(corrupt), f"--inverters={tiny['conv1']}"),
       f"{corrupt} is not a readable image"),
      ((*photos, f"--inverters={tmp_path / 'nowhere'}"),
       "No config.json in"),
      ((*photos, f"--inverters={tiny['conv1']}", "--method=gradient"),
       "--method"),
      ((*photos, f"--inverters={tiny['conv1']}", "--method=optimize",
        "--iterations=0"), "iterations=0"),
  ]
  for args, message in cases:
    proc = reconstruct(*args, f"--out={out}")
    assert proc.returncode == 2, (args, proc.stderr[-3000:])
    assert "ERROR:" in proc.stderr and message in proc.stderr, message
    assert "Traceback" not in proc.stderr
    assert "reconstruction of" not in proc.stderr  # no work was started
  assert not out.exists()
