"""Multi-host training, proven with several local processes.

Two processes with 4 virtual CPU devices each (joined by
`jax.distributed`, talking over gloo) run the real command line on a folder
of photos. Their loss curve must match one process with 8 devices at the
same global batch and seed, and their checkpoint must restore and keep
training in a single process with one device (the Colab case), continuing
the same run.
"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, write_random_photos

FIRST, TOTAL = 6, 8


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def command(data, workdir, steps, *extra):
  return [sys.executable, "-m", "inverter.main",
          "--config=configs/conv1.py:test", f"--workdir={workdir}",
          f"--config.data.source=folder:{data}",
          f"--config.num_train_steps={steps}", "--config.log_every_steps=1",
          f"--config.checkpoint_every_steps={FIRST}",
          "--config.eval_every_steps=1000", *extra]


def env(devices: int) -> dict[str, str]:
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def run(argv, devices):
  proc = subprocess.run(argv, cwd=REPO_ROOT, env=env(devices),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def losses(workdir: pathlib.Path) -> dict[int, float]:
  """train/loss by step from the TensorBoard event files."""
  found = {}
  for path in sorted(workdir.glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == "train/loss":
          found[event.step] = float(tf.make_ndarray(value.tensor))
  return found


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("photos")
  write_random_photos(root, 20, seed=1)
  return root


def test_two_processes_train_like_one_and_their_checkpoint_continues_in_one(
    photos, tmp_path):
  reference = tmp_path / "one_process_8_devices"
  run(command(photos, reference, TOTAL), devices=8)

  workdir = tmp_path / "two_processes"
  port = free_port()
  procs = [subprocess.Popen(
      command(photos, workdir, FIRST, f"--coordinator_address=localhost:{port}",
              "--num_processes=2", f"--process_id={i}"),
      cwd=REPO_ROOT, env=env(4), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  assert "Joined a run of 2 processes" in outputs[1][1]
  # Only process 0 writes metrics and the config.
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 1

  expected = losses(reference)
  got = losses(workdir)
  assert sorted(got) == list(range(1, FIRST + 1))
  np.testing.assert_allclose([got[s] for s in sorted(got)],
                             [expected[s] for s in sorted(got)], rtol=1e-4)

  # Colab case: one process, one device, continues the 2-process run.
  continued = run(command(photos, workdir, TOTAL), devices=1)
  assert f"Resumed from the checkpoint at step {FIRST}" in continued.stderr
  got = losses(workdir)
  np.testing.assert_allclose([got[s] for s in range(FIRST + 1, TOTAL + 1)],
                             [expected[s] for s in range(FIRST + 1, TOTAL + 1)],
                             rtol=1e-4)


def test_sigterm_on_one_host_stops_every_host_at_the_same_saved_step(
    photos, tmp_path):
  """JAX's preemption notifier: the host that gets SIGTERM tells the others;
  all save the same step (state and input position) and exit with 143."""
  workdir = tmp_path / "preempted"
  port = free_port()
  procs = [subprocess.Popen(
      command(photos, workdir, 2000, f"--coordinator_address=localhost:{port}",
              "--num_processes=2", f"--process_id={i}"),
      cwd=REPO_ROOT, env=env(4), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  seen = []
  for line in procs[0].stderr:
    seen.append(line)
    if "step 20/2000" in line:
      break
  procs[1].send_signal(signal.SIGTERM)
  errors = ["".join(seen) + procs[0].communicate(timeout=300)[1],
            procs[1].communicate(timeout=300)[1]]
  assert [p.returncode for p in procs] == [143, 143], errors[0][-3000:]
  stops = [re.search(r"Stopped by SIGTERM after step (\d+)", e) for e in errors]
  assert all(stops), errors[0][-2000:]
  step = int(stops[0].group(1))
  assert int(stops[1].group(1)) == step and 20 <= step < 2000
  assert (workdir / "checkpoints" / str(step) / "state").is_dir()
  assert (workdir / "checkpoints" / str(step) / "data").is_dir()
