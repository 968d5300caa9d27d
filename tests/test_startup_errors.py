"""Configuration errors stop the command line at start-up, before any work.

Each case runs `python -m inverter.main` as a user would and requires: exit
status 2, a message naming the config field and a fix, no training (no
progress line, no traceback) and nothing written: a fresh workdir gets no
checkpoints, and an existing workdir of another experiment keeps every file's
bytes and mtime.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from inverter import encoder_weights, presets
from inverter.models import encoders

from conftest import REPO_ROOT

DEMO = "--config=configs/conv3.py:demo"
PROGRESS_LINE = re.compile(r"\bstep \d+/\d+")


def run_cli(*args, devices: int = 1) -> subprocess.CompletedProcess:
  """`python -m inverter.main ARGS` on `devices` virtual CPU devices."""
  flags = (f"--xla_force_host_platform_device_count={devices}"
           if devices > 1 else "")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS=flags)
  return subprocess.run([sys.executable, "-m", "inverter.main", *args],
                        cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def error_text(proc: subprocess.CompletedProcess) -> str:
  """The user-facing error: what follows the final 'ERROR:'."""
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "ERROR:" in proc.stderr, proc.stderr[-3000:]
  return proc.stderr[proc.stderr.rindex("ERROR:"):]


def assert_stopped_before_work(proc, workdir) -> None:
  assert not PROGRESS_LINE.search(proc.stderr + proc.stdout)
  assert "Traceback" not in proc.stderr
  # A fresh workdir is not even created (at most left empty).
  assert not workdir.exists() or not any(workdir.iterdir())


def snapshot(root) -> dict[str, tuple[str, int]]:
  """Every path under `root`: (content hash or 'dir', mtime in ns)."""
  out = {".": ("dir", root.stat().st_mtime_ns)}
  for path in sorted(root.rglob("*")):
    digest = ("dir" if path.is_dir()
              else hashlib.sha256(path.read_bytes()).hexdigest())
    out[str(path.relative_to(root))] = (digest, path.stat().st_mtime_ns)
  return out


def encoder_takes(encoder_cfg, size: int) -> bool:
  """Whether the encoder maps a size x size input to non-empty taps."""
  encoder_cfg = encoder_cfg.copy_and_resolve_references()
  encoder_cfg.input_size = size
  try:
    shapes = encoders.tap_shapes(encoders.from_config(encoder_cfg))
  except (TypeError, ValueError):
    return False
  return all(0 not in shape for shape in shapes.values())


def suggested_input_size(text: str) -> int:
  return int(re.search(r"--config\.encoder\.input_size=(\d+)", text)[1])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  """DIR/{train,test}/<class>/*.png with the ten classes the `test`
  preset's encoder predicts, for encoder-training configs."""
  root = tmp_path_factory.mktemp("ten_classes")
  for split in ("train", "test"):
    for k in range(10):
      (root / split / f"class{k}").mkdir(parents=True)
      Image.fromarray(np.full((8, 8, 3), 25 * k, np.uint8)).save(
          root / split / f"class{k}" / "0.png")
  return root


def classify_config(image_folder) -> str:
  return ("--config=configs/encoders/cifar10.py:test,"
          f"source=folder:{image_folder}")


@pytest.fixture(scope="module")
def conv1_workdir(tmp_path_factory):
  """A workdir written by a real two-step conv1 run: (path, its snapshot)."""
  workdir = tmp_path_factory.mktemp("conv1_run") / "run"
  proc = run_cli("--config=configs/conv1.py:test", f"--workdir={workdir}",
                 "--config.num_train_steps=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (workdir / "checkpoints").is_dir()
  assert (workdir / "config.json").is_file()
  return workdir, snapshot(workdir)


# ---------------------------------------------------------------------------
# Problems in the config: all of them are listed in one report.
# ---------------------------------------------------------------------------


def test_unknown_layer_and_a_crop_other_than_the_input_are_both_named(
    tmp_path):
  workdir = tmp_path / "run"
  proc = run_cli(DEMO, f"--workdir={workdir}", "--config.layer=conv9",
                 "--config.encoder.input_size=40")
  text = error_text(proc)
  assert "2 problem(s)" in text
  assert "'conv9'" in text and "`layer`" in text
  assert "conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8, prob" in text
  assert "data.crop_size=64" in text and "encoder.input_size=40" in text
  assert "--config.data.crop_size=40" in text
  assert_stopped_before_work(proc, workdir)


def test_unknown_tap_uneven_batch_and_missing_weights_are_all_named(tmp_path):
  workdir, missing = tmp_path / "run", tmp_path / "no_weights"
  proc = run_cli(DEMO, f"--workdir={workdir}", "--config.encoder.tap=relu9",
                 "--config.batch_size=12",
                 f"--config.encoder.weights={missing}", devices=8)
  text = error_text(proc)
  assert "3 problem(s)" in text
  assert "'relu9'" in text and "encoder.tap" in text
  assert ", ".join(encoders.tap_names("caffenet")) in text
  assert "batch_size=12" in text and "devices (8)" in text
  assert "--config.batch_size=8" in text and "--config.batch_size=16" in text
  assert str(missing) in text and "encoder.weights" in text
  assert "python -m inverter.port" in text
  assert "--config.encoder.weights=random" in text
  assert_stopped_before_work(proc, workdir)


def test_input_the_encoder_shrinks_to_nothing_names_the_smallest_size(
    tmp_path):
  workdir = tmp_path / "run"
  proc = run_cli(DEMO, f"--workdir={workdir}", "--config.encoder.input_size=8",
                 "--config.data.crop_size=8", "--config.data.resize_size=8")
  text = error_text(proc)
  assert "1 problem(s)" in text
  assert "encoder.input_size=8 is too small" in text
  smallest = suggested_input_size(text)
  assert f"--config.data.crop_size={smallest}" in text
  # The suggested size is exactly the smallest the encoder takes.
  encoder_cfg = presets.get_config("conv3", "demo").encoder
  assert not encoder_takes(encoder_cfg, 8)
  assert encoder_takes(encoder_cfg, smallest)
  assert not encoder_takes(encoder_cfg, smallest - 1)
  assert_stopped_before_work(proc, workdir)


def test_encoder_training_checks_batch_and_input_size_too(tmp_path,
                                                          image_folder):
  workdir = tmp_path / "run"
  proc = run_cli(classify_config(image_folder), f"--workdir={workdir}",
                 "--config.batch_size=12", "--config.encoder.input_size=4",
                 "--config.data.crop_size=4", "--config.data.resize_size=4",
                 devices=8)
  text = error_text(proc)
  assert "2 problem(s)" in text
  assert "--config.batch_size=8" in text and "--config.batch_size=16" in text
  assert "encoder.input_size=4 is too small" in text
  smallest = suggested_input_size(text)
  encoder_cfg = presets.get_config("conv1", "test").encoder
  assert encoder_takes(encoder_cfg, smallest)
  assert not encoder_takes(encoder_cfg, smallest - 1)
  assert_stopped_before_work(proc, workdir)


# ---------------------------------------------------------------------------
# Encoder weights of another network.
# ---------------------------------------------------------------------------


def test_weights_of_another_architecture_name_each_field_and_the_fix(
    tmp_path):
  # Weights saved for the `test` preset's encoder, given to the `demo` one.
  # Zeros of the right shapes: only the metadata is compared at start-up.
  small = presets.get_config("conv1", "test").encoder
  shapes = jax.eval_shape(lambda: encoder_weights.init_params(
      encoders.from_config(small), seed=0))
  weights = tmp_path / "test_encoder"
  encoder_weights.save(
      str(weights), jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes),
      small, preprocessing=dict(small.preprocessing), source=dict(file="test"))
  workdir = tmp_path / "run"
  proc = run_cli(DEMO, f"--workdir={workdir}",
                 f"--config.encoder.weights={weights}")
  text = error_text(proc)
  assert str(weights) in text and "encoder.weights" in text
  for field in ("input_size", "widths", "fc_width", "num_classes"):
    assert f"encoder.{field}: config" in text, field
  assert "encoder.groups" not in text  # Equal fields are not listed.
  assert f"--config=configs/LAYER.py:encoder={weights}" in text
  assert_stopped_before_work(proc, workdir)


# ---------------------------------------------------------------------------
# A workdir of another experiment.
# ---------------------------------------------------------------------------


def test_other_layer_encoder_and_decoder_are_each_named(conv1_workdir):
  workdir, before = conv1_workdir
  proc = run_cli("--config=configs/conv1.py:test", f"--workdir={workdir}",
                 "--config.layer=conv2", "--config.encoder.fc_width=32",
                 "--config.decoder.conv_channels=(8,)")
  text = error_text(proc)
  assert str(workdir) in text and "different experiment" in text
  assert "layer: workdir 'conv1', config 'conv2'" in text
  assert "encoder.fc_width: workdir 64, config 32" in text
  assert "decoder.conv_channels: workdir [16], config [8]" in text
  assert "--workdir" in text
  assert not PROGRESS_LINE.search(proc.stderr)
  assert snapshot(workdir) == before


def test_eval_mode_refuses_another_decoder_shape(conv1_workdir):
  workdir, before = conv1_workdir
  proc = run_cli("--config=configs/conv1.py:test", f"--workdir={workdir}",
                 "--mode=eval", "--config.decoder.kernel_size=3")
  text = error_text(proc)
  assert "decoder.kernel_size: workdir 5, config 3" in text
  assert "layer:" not in text  # Only what differs is listed.
  assert snapshot(workdir) == before


def test_encoder_training_refuses_an_inverter_workdir(conv1_workdir,
                                                      image_folder):
  workdir, before = conv1_workdir
  proc = run_cli(classify_config(image_folder), f"--workdir={workdir}")
  text = error_text(proc)
  assert "different experiment" in text and "task" in text
  assert not PROGRESS_LINE.search(proc.stderr)
  assert snapshot(workdir) == before
