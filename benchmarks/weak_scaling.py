r"""Weak scaling of the inverter train step over 1, 2, 4, 8 virtual CPU devices.

The per-device batch is fixed (default 16), so the global batch grows with the
device count N (global = N * per-device), as data-parallel training on N chips
would run it. For each N the script starts a fresh Python process with
XLA_FLAGS=--xla_force_host_platform_device_count=N (XLA reads the device count
once per process), builds the inverter exactly as training does
(`train.setup`, `create_train_state`, `make_train_step`, `global_batch`: the
batch sharded over the 1-D 'data' mesh), times the jitted train step after
compilation and warm-up, and prints one JSON line. The parent collects the
lines into a markdown table:

  devices | global batch | median step | images/s | efficiency | vs 1 device

with efficiency = (images/s at N) / (N * images/s at 1), the usual weak-scaling
figure, and "vs 1 device" = (images/s at N) / (images/s at 1).

On a machine with C cores the N virtual devices share those C cores: N
devices do not bring N times the compute, so this is not hardware scaling.
When one device already keeps the C cores busy, N devices doing N times the
work take about N times as long even when partitioning is free: efficiency
is then about 1/N and "vs 1 device" about 1. What falls short of those
figures is the cost of partitioning the step (per-device dispatch, the
gradient all-reduce, smaller per-device kernels). A "vs 1 device" above 1
means the larger global batch uses the cores better than one device's did.

  python benchmarks/weak_scaling.py                      # configs/fc6.py:demo
  python benchmarks/weak_scaling.py configs/conv3.py:demo --per_device_batch 8
  python benchmarks/weak_scaling.py --layer conv3      # = configs/conv3.py:demo
  python benchmarks/weak_scaling.py --devices 1,2 --steps 3 --warmup 1

Encoder weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import step_timer

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEVICE_FLAG = "--xla_force_host_platform_device_count"




# ------------------------------------------------------------------ worker


def worker(num_devices: int, args) -> dict:
  """Times the train step on this process's `num_devices` CPU devices."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.device_count() != num_devices:
    raise RuntimeError(
        f"Asked for {num_devices} devices but JAX sees {jax.device_count()}"
        f" ({jax.default_backend()});"
        f" XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}")
  config = step_timer.load_config(args.config)
  config.batch_size = num_devices * args.per_device_batch
  result = step_timer.time_train_step(config, args.steps, args.warmup)
  return dict(result, devices=num_devices, global_batch=config.batch_size,
              per_device_batch=args.per_device_batch,
              compile_s=round(result["compile_s"], 2))


# ------------------------------------------------------------------ parent


def worker_env(num_devices: int) -> dict[str, str]:
  """This environment with exactly `num_devices` host devices, CPU only."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith(DEVICE_FLAG)]
  env["XLA_FLAGS"] = " ".join(flags + [f"{DEVICE_FLAG}={num_devices}"])
  # Virtual devices exist only on the host platform.
  env["JAX_PLATFORMS"] = "cpu"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
  return env


def run_worker(num_devices: int, args) -> dict:
  cmd = [sys.executable, __file__, args.config, "--worker", str(num_devices),
         "--per_device_batch", str(args.per_device_batch),
         "--steps", str(args.steps), "--warmup", str(args.warmup)]
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=worker_env(num_devices), cwd=REPO_ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, check=False)
  lines = [line for line in proc.stdout.splitlines()
           if line.startswith("{")]
  if proc.returncode or not lines:
    raise SystemExit(f"Worker for {num_devices} device(s) failed (exit"
                     f" {proc.returncode}):\n{proc.stderr[-3000:]}")
  result = json.loads(lines[-1])
  result["wall_s"] = round(time.perf_counter() - start, 1)
  print(f"  {num_devices} device(s): {result['images_per_s']:.1f} images/s"
        f" (compile {result['compile_s']:.1f} s, process"
        f" {result['wall_s']:.1f} s)", file=sys.stderr, flush=True)
  return result


def table(results: list[dict]) -> str:
  base = next((r for r in results if r["devices"] == 1), None)
  rows = ["| devices | global batch | median step (ms) | images/s |"
          " efficiency | vs 1 device |", "|---:|---:|---:|---:|---:|---:|"]
  for r in results:
    if base:
      ratio = r["images_per_s"] / base["images_per_s"]
      eff, vs1 = f"{ratio / r['devices']:.2f}", f"{ratio:.2f}"
    else:
      eff = vs1 = "n/a (no 1-device run)"
    rows.append(f"| {r['devices']} | {r['global_batch']} |"
                f" {r['median_s'] * 1e3:.1f} | {r['images_per_s']:.1f} |"
                f" {eff} | {vs1} |")
  return "\n".join(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("config", nargs="?", default="configs/fc6.py:demo",
                      help="config file[:args], e.g. configs/conv3.py:demo")
  parser.add_argument("--layer", default=None,
                      help="shorthand for configs/LAYER.py:demo")
  parser.add_argument("--per_device_batch", type=int, default=16)
  parser.add_argument("--devices", default="1,2,4,8",
                      help="comma-separated device counts")
  parser.add_argument("--steps", type=int, default=10,
                      help="timed steps per device count")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed steps after the compiling one")
  parser.add_argument("--worker", type=int, default=None,
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.per_device_batch <= 0:
    parser.error("--per_device_batch must be positive")
  if args.layer:
    args.config = f"configs/{args.layer}.py:demo"
  path, sep, arg = args.config.partition(":")
  found = [p for p in (pathlib.Path(path), REPO_ROOT / path) if p.is_file()]
  if not found:
    parser.error(f"config file {path} not found")
  # Workers run in the repository root: pass them an absolute path.
  if args.worker is None:
    args.config = str(found[0].resolve()) + sep + arg

  if args.worker is not None:
    print(json.dumps(worker(args.worker, args)), flush=True)
    return

  counts = [int(n) for n in args.devices.split(",") if n.strip()]
  cores = os.cpu_count()
  print(f"Weak scaling of {args.config}: {args.per_device_batch} images per"
        f" device, {args.warmup} warm-up + {args.steps} timed steps per"
        f" device count, one process per count; {cores} CPU cores,"
        f" load average {os.getloadavg()[0]:.1f}.", file=sys.stderr,
        flush=True)
  results = [run_worker(n, args) for n in counts]
  first = results[0]
  print(f"\n### Weak scaling: {args.config} (layer {first['layer']}, input"
        f" {first['input_size']}), {args.per_device_batch} images per"
        f" device, backend {first['backend']}\n")
  print(table(results))
  print(f"\nMedian over {args.steps} timed steps after compilation and"
        f" {args.warmup} warm-up steps. Efficiency = images/s at N / (N x"
        f" images/s at 1); vs 1 device = images/s at N / images/s at 1.\n"
        f"The N virtual devices share this machine's {cores} CPU cores, so"
        f" this is not hardware scaling over N chips: with free partitioning"
        f" efficiency would be about 1/N and 'vs 1 device' about 1 (once one"
        f" device keeps the cores busy); the shortfall measures the cost of"
        f" partitioning the step (dispatch, gradient all-reduce, smaller"
        f" per-device work).")
  print(json.dumps(dict(benchmark="weak_scaling", config=args.config,
                        cpu_count=cores, results=results)))


if __name__ == "__main__":
  main()
