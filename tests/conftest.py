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
