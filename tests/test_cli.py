"""The command lines' shared behaviour (inverter/cli.py): tuple overrides as
people type them, and one path from a user's mistake to exit status 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from inverter import cli, errors, preemption

from conftest import REPO_ROOT


def parse_analysis_config(monkeypatch, *overrides: str):
  """configs/analysis.py:layers with `overrides`, parsed as on the command
  line (config_flags reads the overrides from sys.argv)."""
  argv = ["prog", "--config=configs/analysis.py:layers", *overrides]
  monkeypatch.setattr(sys, "argv", argv)
  monkeypatch.chdir(REPO_ROOT)
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values)
  flag_values(argv)
  return flag_values.config


@pytest.mark.parametrize("overrides", [
    ("--config.inverters=/runs/conv1,/runs/fc6",),
    ("--config.inverters=/runs/conv1, /runs/fc6",),
    ("--config.inverters=('/runs/conv1', '/runs/fc6')",),
    ("--config.inverters=['/runs/conv1', '/runs/fc6']",),
    ("--config.inverters=/runs/conv1", "--config.inverters=/runs/fc6"),
])
def test_a_list_of_workdirs_is_read_the_same_in_every_form(monkeypatch,
                                                           overrides):
  config = parse_analysis_config(monkeypatch, *overrides)
  assert config.inverters == ("/runs/conv1", "/runs/fc6")


def test_a_glob_stays_one_entry_and_numbers_stay_numbers(monkeypatch):
  config = parse_analysis_config(
      monkeypatch, "--config.inverters=/runs/demo_*",
      "--config.color_position.shifts=0.25,1",
      "--config.perturb.perturbations=binarize,dropout:0.5")
  assert config.inverters == ("/runs/demo_*",)
  assert config.color_position.shifts == (0.25, 1)
  assert config.perturb.perturbations == ("binarize", "dropout:0.5")


def test_an_unparsable_list_names_the_field_and_both_accepted_forms(
    monkeypatch):
  with pytest.raises(flags.IllegalFlagValueError) as raised:
    parse_analysis_config(monkeypatch, "--config.inverters=('/a', '/b'")
  message = str(raised.value)
  assert "--config.inverters=" in message
  assert "a,b,c" in message and "('a', 'b')" in message


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module,args", [
    ("inverter.main", ("--config=configs/conv1.py:test",
                       "--config.num_train_steps=abc")),
    ("inverter.analysis", ("--config=configs/analysis.py:layers",
                           "--config.inverters=('/a',")),
])
def test_a_bad_flag_value_is_one_error_line_with_status_2(tmp_path, module,
                                                          args):
  workdir = tmp_path / "out"
  proc = run_module(module, *args, f"--workdir={workdir}")
  assert proc.returncode == 2, proc.stderr[-3000:]
  bad_flag = args[-1].split("=")[0]
  assert f"ERROR: flag {bad_flag}=" in proc.stderr, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert "Pass --helpshort" not in proc.stderr
  assert not workdir.exists()


def test_user_errors_exit_2_interruptions_128_plus_signal_bugs_propagate(
    capsys):
  def failing(error):
    def main(argv):
      del argv
      raise error
    return cli.exit_on_user_error(main)

  for error, status in [(errors.UserError("fix the config"), 2),
                        (FileNotFoundError("no such file"), 2),
                        (preemption.Interrupted(7, signal.SIGTERM), 143)]:
    with pytest.raises(SystemExit) as exited:
      failing(error)(["prog"])
    assert exited.value.code == status
    assert str(error) in capsys.readouterr().err
  with pytest.raises(ZeroDivisionError):
    failing(ZeroDivisionError("a bug"))(["prog"])


def test_every_error_that_names_a_fix_is_a_user_error():
  from inverter import distributed, encoder_weights, preflight, train
  from inverter import analysis
  from inverter.analysis import common
  from inverter.port import common as port_common
  for error_class in (preflight.PreflightError,
                      encoder_weights.EncoderWeightsError,
                      train.WorkdirMismatchError, train.DivergedError,
                      distributed.DistributedConfigError,
                      analysis.ConfigError, common.MissingInverterError,
                      port_common.PortError):
    assert issubclass(error_class, errors.UserError), error_class
