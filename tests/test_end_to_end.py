"""Whole runs: train + evaluate, resume, multi-device equivalence, bad input.

These drive `train.train_and_evaluate` and the command line as a user would,
on the tiny `test` preset (a few seconds per run).
"""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow as tf

from inverter import preflight, presets, train, training_loop
from inverter import data as data_lib

from conftest import REPO_ROOT


def tiny_config(layer="conv1", **overrides):
  config = presets.get_config(layer, "test")
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


def run_cli(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")
  start = time.monotonic()
  proc = subprocess.run([sys.executable, "-m", "inverter.main", *args],
                        cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
  return proc, time.monotonic() - start


def test_cli_trains_evaluates_and_writes_outputs(tmp_path):
  proc, _ = run_cli("--config=configs/conv1.py:test", f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["step"] == 4 and metrics["layer"] == "conv1"
  assert metrics["num_images"] == 8
  assert 0 < metrics["normalized_error"] < 5
  assert metrics["encoder_weights"] == "random"
  assert (tmp_path / "eval" / "reconstructions.png").stat().st_size > 0
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == ["2", "4"]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["config"]["layer"] == "conv1"
  assert f"{metrics['normalized_error']:.4f}" in proc.stdout
  assert "RANDOMLY INITIALISED" in proc.stderr


def test_progress_is_one_console_line_per_window_and_all_in_tensorboard(
    tmp_path):
  proc, _ = run_cli("--config=configs/conv1.py:test", f"--workdir={tmp_path}",
                    "--config.num_train_steps=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  progress = [line for line in proc.stderr.splitlines()
              if "] step " in line and "images/s, ETA" in line]
  assert [line.split("] ")[1].split(":")[0] for line in progress] == [
      "step 2/6", "step 4/6", "step 6/6"]
  for echo in ("logging_writer.py", "Setting work unit notes"):
    assert echo not in proc.stderr, echo
  tags = set()
  for path in tmp_path.glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags |= {value.tag for value in event.summary.value}
  assert {"train/loss", "train/images_per_sec", "steps_per_sec", "uptime",
          "learning_rate", "eval/normalized_error"} <= tags


def test_rerun_with_more_steps_resumes_from_the_checkpoint(tmp_path,
                                                          monkeypatch):
  train.train_and_evaluate(tiny_config(), str(tmp_path))
  config = tiny_config(num_train_steps=6)
  saved = train.restore_latest(train.setup(config), str(tmp_path))
  assert int(saved.step) == 4
  seen = {}
  original = training_loop._loop

  def spy(config_, state, start_step, *args):
    seen["start_step"], seen["params"] = start_step, jax.tree.map(
        np.asarray, state.params)
    return original(config_, state, start_step, *args)

  monkeypatch.setattr(training_loop, "_loop", spy)
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert seen["start_step"] == 4
  jax.tree.map(np.testing.assert_array_equal, seen["params"],
               jax.tree.map(np.asarray, saved.params))
  assert metrics["step"] == 6


def test_rerun_after_the_last_step_only_evaluates(tmp_path, monkeypatch):
  first = train.train_and_evaluate(tiny_config(), str(tmp_path))
  monkeypatch.setattr(training_loop, "_loop",
                      lambda *a: pytest.fail("trained"))
  again = train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert again["normalized_error"] == pytest.approx(first["normalized_error"],
                                                    rel=1e-6)
  assert train.evaluate(tiny_config(), str(tmp_path))["normalized_error"] == (
      pytest.approx(first["normalized_error"], rel=1e-6))


def test_one_and_eight_devices_give_the_same_run(tmp_path):
  """Same global batch and seed on mocked imagenet2012: same training."""
  summaries = {}
  for devices in (1, 8):
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "mock_imagenet_run.py"),
         str(tmp_path / f"d{devices}"), str(devices)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("SUMMARY ")][-1]
    summaries[devices] = json.loads(line[len("SUMMARY "):])
  one, eight = summaries[1], summaries[8]
  assert one["metrics"]["num_images"] == eight["metrics"]["num_images"] >= 8
  assert eight["metrics"]["normalized_error"] == pytest.approx(
      one["metrics"]["normalized_error"], rel=1e-4)
  assert one["params"].keys() == eight["params"].keys()
  for key in one["params"]:
    assert eight["params"][key] == pytest.approx(one["params"][key], rel=1e-4)


def test_paper_config_without_imagenet_or_weights_lists_everything(tmp_path):
  proc, seconds = run_cli(
      "--config=configs/fc6.py", f"--workdir={tmp_path / 'run'}",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
      f"--config.encoder.weights={tmp_path / 'no_weights'}")
  assert proc.returncode == 2
  assert seconds < 60
  for needle in ("imagenet2012", "ILSVRC2012_img_train.tar",
                 str(tmp_path / "tfds" / "downloads" / "manual"),
                 "configs/fc6.py:demo", "encoder.weights",
                 str(tmp_path / "no_weights"), "docs/encoders.md"):
    assert needle in proc.stderr, needle
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_layer_is_refused_with_the_choices(tmp_path):
  proc, _ = run_cli("--config=configs/fc6.py:test", f"--workdir={tmp_path}",
                    "--config.layer=fc9")
  assert proc.returncode == 2
  assert "'fc9'" in proc.stderr and "conv1, conv2" in proc.stderr


@pytest.mark.parametrize("overrides,needle", [
    (dict(batch_size=12), "batch_size=12 must be a positive multiple"),
    (dict(eval_batch_size=4), "eval_batch_size=4 must be a positive multiple"),
    ({"data.crop_size": 30}, "data.crop_size=30 differs from"),
    ({"encoder.tap": "relu9"}, "Unknown tap 'relu9'"),
    ({"decoder.start_shape": (4, 4, 8)}, "decoder.fc_widths[-1]=256"),
    ({"data.source": "folder:/does/not/exist"}, "/does/not/exist"),
    (dict(feature_transform="top0"), "Unknown feature_transform 'top0'"),
])
def test_bad_configs_stop_before_any_work(tmp_path, overrides, needle):
  assert jax.device_count() == 8
  with pytest.raises(preflight.PreflightError) as e:
    train.train_and_evaluate(tiny_config("fc6", **overrides), str(tmp_path))
  assert needle in str(e.value)
  assert not any(tmp_path.iterdir())


def test_workdir_of_another_experiment_is_refused_untouched(tmp_path):
  train.train_and_evaluate(tiny_config("conv1"), str(tmp_path))
  before = (tmp_path / "config.json").read_text()
  with pytest.raises(train.WorkdirMismatchError, match="layer"):
    train.train_and_evaluate(tiny_config("fc6"), str(tmp_path))
  assert (tmp_path / "config.json").read_text() == before


def test_top5_inverter_does_not_resume_an_all_features_workdir(tmp_path):
  train.train_and_evaluate(tiny_config("fc8"), str(tmp_path))
  with pytest.raises(train.WorkdirMismatchError, match="feature_transform"):
    train.train_and_evaluate(tiny_config("fc8", feature_transform="top5"),
                             str(tmp_path))


def test_eval_only_mode_without_a_checkpoint_says_train_first(tmp_path):
  with pytest.raises(FileNotFoundError, match="train first"):
    train.evaluate(tiny_config(), str(tmp_path))


def test_nan_loss_stops_with_a_clear_error_and_saves_nothing(tmp_path,
                                                             monkeypatch):
  real = data_lib.train_iterator

  def poisoned(*args, **kwargs):
    for batch in real(*args, **kwargs):
      yield dict(batch, image=np.full_like(batch["image"], np.nan))

  monkeypatch.setattr(data_lib, "train_iterator", poisoned)
  with pytest.raises(train.DivergedError, match="learning_rate"):
    train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert not [p for p in (tmp_path / "checkpoints").iterdir()
              if p.name.isdigit()]


def test_a_workdir_whose_checkpoints_have_no_config_is_refused(tmp_path):
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  with pytest.raises(train.WorkdirMismatchError, match="no config.json"):
    train.check_workdir(tiny_config(), tmp_path)


def test_a_corrupt_saved_config_is_refused_by_name(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(train.WorkdirMismatchError, match="config.json"):
    train.check_workdir(tiny_config(), tmp_path)
