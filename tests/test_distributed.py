"""Joining a multi-process run, and noticing preemption, in one process."""

import os
import signal

import pytest

from inverter import distributed, preemption


@pytest.fixture
def clean_env(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
               "JAX_PROCESS_ID", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
               "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def test_flags_win_over_the_environment(clean_env):
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "envhost:1")
  clean_env.setenv("JAX_NUM_PROCESSES", "4")
  clean_env.setenv("JAX_PROCESS_ID", "3")
  assert distributed.settings_from("flaghost:2", None, 1) == (
      distributed.Settings("flaghost:2", 4, 1))


@pytest.mark.parametrize("settings, needle", [
    (distributed.Settings("h:1", 2, None), "--process_id"),
    (distributed.Settings(None, 2, 0), "--coordinator_address"),
    (distributed.Settings("h:1", 2, 2), "--process_id=2"),
])
def test_incomplete_or_impossible_settings_are_refused_by_name(settings,
                                                               needle):
  with pytest.raises(distributed.DistributedConfigError, match=needle):
    distributed.initialize("auto", settings)


def test_a_bad_environment_value_names_the_variable(clean_env):
  clean_env.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(distributed.DistributedConfigError,
                     match="JAX_NUM_PROCESSES"):
    distributed.settings_from(None, None, None)


def test_a_plain_single_host_run_joins_nothing(clean_env):
  assert not distributed.initialize("auto", distributed.Settings())
  assert not distributed.initialize("off", distributed.Settings("h:1", 2, 0))
  assert not distributed.initialize("auto", distributed.Settings("h:1", 1, 0))


def test_schedulers_with_several_tasks_count_as_multi_host(clean_env):
  assert not distributed._scheduler_has_several_tasks()
  clean_env.setenv("SLURM_NTASKS", "1")
  assert not distributed._scheduler_has_several_tasks()
  clean_env.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3")
  assert distributed._scheduler_has_several_tasks()


def test_sigterm_asks_to_stop_after_the_step_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.Watcher() as watcher:
    assert not watcher.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert watcher.should_stop(2)
    assert watcher.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_interrupts_at_once():
  with preemption.Watcher() as watcher:
    os.kill(os.getpid(), signal.SIGINT)
    assert watcher.should_stop(1)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_says_how_to_resume():
  message = str(preemption.Interrupted(12, signal.SIGTERM))
  assert "SIGTERM" in message and "12" in message and "Rerun" in message
