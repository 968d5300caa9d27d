"""Interruptions lose nothing: SIGTERM, exact resume and hard kills, driving
the real command line in subprocesses.

Every run trains the tiny `test` preset on a folder of 23 small photos (one
of them corrupt) with batches of 8, so 30 steps cross several epochs and an
undecodable file; the reference is one uninterrupted run.
"""

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO_ROOT, write_random_photos

STEPS = 30
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
           XLA_FLAGS="--xla_force_host_platform_device_count=2")


def flags(data: pathlib.Path, workdir: pathlib.Path) -> list[str]:
  return ["--config=configs/conv1.py:test", f"--workdir={workdir}",
          f"--config.data.source=folder:{data}",
          f"--config.num_train_steps={STEPS}", "--config.log_every_steps=1",
          "--config.checkpoint_every_steps=10",
          "--config.eval_every_steps=1000"]


class Run:
  """A background CLI process whose stderr is collected line by line."""

  def __init__(self, argv: list[str]):
    self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=ENV,
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    self.lines: list[str] = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line)

  def wait_for(self, text: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in self.lines):
      if self.proc.poll() is not None or time.monotonic() > deadline:
        raise AssertionError(f"never saw {text!r}:\n" + self.output[-3000:])
      time.sleep(0.02)

  def finish(self, timeout: float = 300) -> int:
    code = self.proc.wait(timeout=timeout)
    self._reader.join(timeout=10)
    return code

  @property
  def output(self) -> str:
    return "".join(self.lines)


def cli(*args: str) -> Run:
  return Run([sys.executable, "-m", "inverter.main", *args])


def final_params(workdir: pathlib.Path, step: int = STEPS):
  state = ocp.StandardCheckpointer().restore(
      workdir / "checkpoints" / str(step) / "state")
  return state["params"]


def assert_same_params(a, b):
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7), a, b)


def completed_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit())


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("photos")
  write_random_photos(root, 22, seed=0)
  (root / "photo99.jpg").write_bytes(b"not a jpeg")
  return root


@pytest.fixture(scope="module")
def uninterrupted(photos, tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp("uninterrupted")
  run = cli(*flags(photos, workdir))
  assert run.finish() == 0, run.output[-3000:]
  return workdir


def test_sigterm_saves_exits_and_the_rerun_ends_like_an_uninterrupted_run(
    photos, uninterrupted, tmp_path):
  run = cli(*flags(photos, tmp_path))
  run.wait_for(f"step 13/{STEPS}")
  run.proc.send_signal(signal.SIGTERM)
  assert run.finish() == 128 + signal.SIGTERM, run.output[-3000:]
  assert "Stopped by SIGTERM after step" in run.output
  stopped = completed_steps(tmp_path)[-1]
  assert 13 <= stopped < STEPS
  assert not (tmp_path / "checkpoints" / str(STEPS)).exists()
  # Metrics were flushed: TensorBoard has the progress up to the stop.
  assert list(tmp_path.glob("events.out.tfevents.*"))

  rerun = cli(*flags(photos, tmp_path))
  assert rerun.finish() == 0, rerun.output[-3000:]
  assert f"Resumed from the checkpoint at step {stopped}" in rerun.output
  assert_same_params(final_params(tmp_path), final_params(uninterrupted))


def test_hard_kill_while_committing_a_checkpoint_resumes_from_the_last_one(
    photos, uninterrupted, tmp_path):
  marker = tmp_path / "stalled"
  workdir = tmp_path / "run"
  run = Run([sys.executable, str(REPO_ROOT / "tests" /
                                 "cli_with_stalled_commit.py"),
             "20", str(marker), *flags(photos, workdir)])
  deadline = time.monotonic() + 240
  try:
    # The marker is created before its text is written: wait for both.
    while not (marker.exists() and marker.read_text()):
      assert run.proc.poll() is None, run.output[-3000:]
      assert time.monotonic() < deadline, run.output[-3000:]
      time.sleep(0.02)
    # Every file of step 20 is written, only the commit is missing.
    temporary = pathlib.Path(marker.read_text())
    assert (temporary / "state").is_dir() and (temporary / "data").is_dir()
  finally:
    run.proc.kill()  # Also when an assertion failed: it would stall forever.
  assert run.finish() == -signal.SIGKILL
  assert completed_steps(workdir) == [10]

  rerun = cli(*flags(photos, workdir))
  assert rerun.finish() == 0, rerun.output[-3000:]
  assert "Resumed from the checkpoint at step 10" in rerun.output
  assert completed_steps(workdir)[-1] == STEPS
  assert_same_params(final_params(workdir), final_params(uninterrupted))
