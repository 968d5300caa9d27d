"""Test session set-up: 8 virtual CPU devices, quiet TensorFlow.

XLA reads XLA_FLAGS once, when JAX first initialises its backend, so this must
run before any test imports jax.
"""

import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NUM_TEST_DEVICES = 8

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + f" --xla_force_host_platform_device_count={NUM_TEST_DEVICES}").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Config files live outside the package; make `configs` importable.
sys.path.insert(0, str(REPO_ROOT))


def write_random_photos(root, count: int, seed: int) -> None:
  """`count` noise JPEGs of 40x48 pixels in `root` (a small image folder)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for i in range(count):
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(
        pathlib.Path(root) / f"photo{i:02d}.jpg")


# Parity tolerance: max |ours - reference| / max |reference| at every tap.
TAP_TOLERANCE = 1e-4


def assert_every_tap_matches(ours, theirs, tap_names) -> None:
  """Our encoder's taps (NHWC) equal a PyTorch reference's (NCHW tensors)
  to TAP_TOLERANCE, and both have exactly the taps `tap_names`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert set(ours) == set(theirs) == set(tap_names)
  for name, want in theirs.items():
    want = want.detach().numpy()
    if want.ndim == 4:
      want = want.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    got = np.asarray(ours[name])
    assert got.shape == want.shape, name
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= TAP_TOLERANCE, f"{name}: relative error {err:.2e}"
