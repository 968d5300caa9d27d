r"""Inverter train step on this CPU: JAX against PyTorch, interleaved.

For each row (an inverter config and a batch size) one process builds
  * JAX: the project's train step (`inverter.train`: frozen encoder forward,
    decoder forward and backward, L2 loss, Adam; the standalone copy of
    benchmarks/gpu_train_step.py where inverter.train does not import),
    compiled ahead of timing, float32, random encoder weights;
  * PyTorch: the same network and step (the mirror in
    benchmarks/gpu_train_step.py: `torch_train`), eager, float32, with the
    JAX weights copied in;
and then alternates one JAX step and one PyTorch step (the interleaving
timer of benchmarks/encoder_train_speed.py), so a load change on a shared
machine hits both alike. The first step of each is compared: same weights,
same images, so the two losses must agree to 1e-4 relative, and the
parameter counts must be equal; otherwise the run fails.

Reported per row: median step time and images/s per framework, the ratio
JAX images/s / PyTorch images/s (median steps; also of the best steps),
FLOPs per step from XLA's cost analysis of the compiled JAX step (used for
both rows; PyTorch's FlopCounterMode count is in the JSON: XLA counts what
it runs, e.g. the sub-pixel up-convolution's combined 3x3 kernel, about
1.4x the multiply-adds of a 5x5 transposed convolution), GFLOP/s and % of
this CPU's float32 peak, the load average and PyTorch's thread count.

Peak float32 FLOP/s = cores x FMA units per core x float32 lanes per unit x
2 (an FMA is two FLOPs) x clock, read from /proc/cpuinfo and lscpu:
  * cores: the CPUs this process may use, divided by lscpu's threads per
    core (hyper-threads share one core's FMA units);
  * FMA units: 2 per core, assumed (Intel since Haswell, AMD since Zen;
    some Xeon Silver/Bronze have one 512-bit unit: then this is 2x high);
  * lanes: 16 with avx512f, 8 with avx/avx2, 4 otherwise; AMD Zen 4
    (family 25 with avx512f) runs 512-bit instructions on 256-bit units, so
    8; Zen 1 (family 23, model < 0x30) runs 256-bit on 128-bit, so 4; no
    'fma' flag counts 1 FLOP per lane per unit instead of 2;
  * clock: lscpu's "CPU max MHz" where it has one, else /proc/cpuinfo's
    "cpu MHz" (under a hypervisor the nominal clock: turbo can exceed it).
`--peak_gflops` overrides the estimate. Each row states what it used.

Rows (`--rows`, comma-separated; a group name or a config spec with an
optional @batch, e.g. configs/conv3.py:demo@16):
  demo           configs/conv2.py:demo, configs/fc6.py:demo (their batch, 32)
  cifar10        configs/conv2.py:cifar10, configs/fc8.py:cifar10, batch 64
  tiny_imagenet  configs/conv2.py:tiny_imagenet, configs/fc8.py:tiny_imagenet,
                 batch 64
  full           configs/conv2.py, configs/fc6.py (caffenet, 227), batch 16

  python benchmarks/cpu_train_step.py                        # every row
  python benchmarks/cpu_train_step.py --rows demo,cifar10 --steps 20
  python benchmarks/cpu_train_step.py --rows full --steps 5 --warmup 2
  python benchmarks/cpu_train_step.py --rows configs/fc7.py:demo@64
  python benchmarks/cpu_train_step.py --torch_threads 1      # busy machine

PyTorch's CPU threads slow down far more than XLA's on a busy machine (see
encoder_train_speed.py), so the ratio only means something at a load
average well below the core count; the script prints it before and after
every row. Results print as a markdown table and one JSON line, and go to
$OUT/cpu_train_step.json when $OUT is set. Needs jax, flax, optax, torch
(CPU build) and, for the project's own step, TensorFlow and clu.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pathlib
import re
import subprocess
import sys
import time

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
  if _path not in sys.path:
    sys.path.insert(0, _path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gpu_train_step as mirror  # pylint: disable=g-import-not-at-top,wrong-import-position

ROW_GROUPS = {
    "demo": [("configs/conv2.py:demo", None), ("configs/fc6.py:demo", None)],
    "cifar10": [("configs/conv2.py:cifar10", 64), ("configs/fc8.py:cifar10",
                                                   64)],
    "tiny_imagenet": [("configs/conv2.py:tiny_imagenet", 64),
                      ("configs/fc8.py:tiny_imagenet", 64)],
    "full": [("configs/conv2.py", 16), ("configs/fc6.py", 16)],
}


def parse_rows(text: str) -> list[tuple[str, str, int | None]]:
  """'demo,configs/fc7.py:demo@64' -> [(group, config spec, batch)]."""
  rows = []
  for token in (t.strip() for t in text.split(",")):
    if not token:
      continue
    if token in ROW_GROUPS:
      rows += [(token, spec, batch) for spec, batch in ROW_GROUPS[token]]
    elif ".py" in token:
      spec, _, batch = token.partition("@")
      rows.append(("custom", spec, int(batch) if batch else None))
    else:
      raise SystemExit(f"--rows: {token!r} is neither a group"
                       f" ({', '.join(ROW_GROUPS)}) nor a config file spec.")
  return rows


# ------------------------------------------------------------- CPU peak


def _cpuinfo() -> dict[str, str]:
  """The first processor block of /proc/cpuinfo."""
  info = {}
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return info
  for line in text.split("\n\n")[0].splitlines():
    key, sep, value = line.partition(":")
    if sep:
      info[key.strip()] = value.strip()
  return info


def _lscpu() -> dict[str, str]:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True,
                         check=False, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    return {}
  return {k.strip(): v.strip() for k, _, v in
          (line.partition(":") for line in out.splitlines())}


def cpu_peak(override_gflops: float | None = None) -> dict:
  """This CPU's float32 peak GFLOP/s and how it was estimated (see the
  module docstring)."""
  info, lscpu = _cpuinfo(), _lscpu()
  flags = set(info.get("flags", "").split())
  vendor = info.get("vendor_id", "")
  family = int(info.get("cpu family", "0") or 0)
  model = int(info.get("model", "0") or 0)
  try:
    logical = len(os.sched_getaffinity(0))
  except AttributeError:
    logical = os.cpu_count() or 1
  threads_per_core = int(lscpu.get("Thread(s) per core", "1") or 1)
  cores = max(1, logical // threads_per_core)
  bits = 512 if "avx512f" in flags else 256 if flags & {"avx", "avx2"} \
      else 128
  note = ""
  if vendor == "AuthenticAMD" and family == 25 and bits == 512:
    bits, note = 256, " (AMD Zen 4: 512-bit ops on 256-bit units)"
  elif vendor == "AuthenticAMD" and family == 23 and model < 0x30:
    bits, note = min(bits, 128), " (AMD Zen 1: 256-bit ops on 128-bit units)"
  lanes = bits // 32
  fma_units = 2
  flops_per_lane = 2 if "fma" in flags else 1
  mhz, mhz_source = None, None
  if lscpu.get("CPU max MHz"):
    mhz, mhz_source = float(lscpu["CPU max MHz"]), "lscpu CPU max MHz"
  elif info.get("cpu MHz"):
    mhz, mhz_source = float(info["cpu MHz"]), "/proc/cpuinfo cpu MHz"
  else:
    match = re.search(r"@\s*([\d.]+)\s*GHz", info.get("model name", ""))
    if match:
      mhz, mhz_source = float(match.group(1)) * 1e3, "model name"
  estimate = (cores * fma_units * lanes * flops_per_lane * mhz / 1e3
              if mhz else None)
  formula = (f"{cores} cores x {fma_units} FMA units (assumed) x {lanes}"
             f" float32 lanes{note} x {flops_per_lane} FLOPs per FMA x"
             f" {fmt(mhz and mhz / 1e3, '.3f', '?')} GHz ({mhz_source})"
             f" = {fmt(estimate, '.1f', '?')} GFLOP/s")
  return dict(
      model=info.get("model name", "unknown"), vendor=vendor, family=family,
      model_number=model, logical_cpus=logical,
      threads_per_core=threads_per_core, cores=cores,
      simd=("avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags
            else "avx" if "avx" in flags else "sse"),
      fma="fma" in flags, lanes=lanes, fma_units=fma_units, mhz=mhz,
      mhz_source=mhz_source, estimate_gflops=estimate,
      peak_gflops=override_gflops or estimate,
      formula=(f"--peak_gflops {override_gflops} (estimate: {formula})"
               if override_gflops else formula))


def fmt(value, spec: str, missing: str = "-") -> str:
  return missing if value is None else format(value, spec)


# ------------------------------------------------------------------- rows


def bench_row(group: str, spec: str, batch: int | None, steps: int,
              warmup: int, torch_flops: bool) -> dict:
  """Builds both steps for one config, checks their first losses agree and
  times them interleaved."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from encoder_train_speed import time_interleaved  # pylint: disable=g-import-not-at-top

  config = mirror.make_config(spec, "float32")
  batch = int(batch or config.batch_size)
  net = mirror.describe_net(config)
  row = dict(group=group, config=spec, layer=net["layer"], tap=net["tap"],
             input_size=net["input_size"], batch=batch,
             feature_shape=net["feature_shape"],
             output_size=net["decoder"]["output_size"],
             jax_params=net["jax_params"])
  size = net["input_size"]
  images = np.random.default_rng(0).normal(
      0, 60, (batch, size, size, 3)).astype(np.float32)

  bench = mirror.build_jax_train(config)
  state = bench.new_state()
  dec0 = jax.device_get(state.params)
  once_jax, compiled, compile_s, _ = mirror.jax_stepper(bench, images, state)
  del state  # Donated to the first step.
  row.update(jax_path=bench.path, compile_s=compile_s,
             flops_per_step=mirror.xla_flops(compiled))

  x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  encoder, decoder, _, _, step_torch, _ = mirror.torch_train(
      net, batch, "float32", "cpu", False, False, images=x)
  mirror.copy_jax_params(encoder, decoder,
                         jax.device_get(bench.encoder_params), dec0)
  row["torch_params"] = dict(
      encoder_to_tap=sum(p.numel() for p in encoder.parameters()),
      decoder=sum(p.numel() for p in decoder.parameters()))
  jp = net["jax_params"]
  row["params_equal"] = (row["torch_params"]["encoder_to_tap"]
                         == jp["encoder_to_tap"]
                         and row["torch_params"]["decoder"] == jp["decoder"])

  # First steps: the same weights and images, so the same loss.
  start = time.perf_counter()
  loss_jax = float(once_jax())
  row["jax_first_step_s"] = time.perf_counter() - start
  start = time.perf_counter()
  loss_torch = float(step_torch().detach())
  row["torch_first_step_s"] = time.perf_counter() - start
  row.update(jax_loss0=loss_jax, torch_loss0=loss_torch,
             loss0_rel=abs(loss_jax - loss_torch) / abs(loss_jax))

  row["load_before"] = os.getloadavg()
  with contextlib.redirect_stdout(sys.stderr):  # Its warm-up notes.
    medians, times = time_interleaved(
        {"jax": once_jax, "torch": step_torch}, max(0, warmup - 1), steps)
  row["load_after"] = os.getloadavg()
  for name in ("jax", "torch"):
    row[f"{name}_median_s"] = medians[name]
    row[f"{name}_best_s"] = min(times[name])
    row[f"{name}_times_s"] = times[name]
    row[f"{name}_images_per_s"] = batch / medians[name]
  row["ratio"] = medians["torch"] / medians["jax"]
  row["ratio_best"] = min(times["torch"]) / min(times["jax"])
  if torch_flops:
    from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
    counter = FlopCounterMode(display=False)
    with counter:  # One more step, outside the timing.
      step_torch()
    row["torch_flop_counter"] = float(counter.get_total_flops())
  return row


def add_flop_rates(row: dict, peak_gflops: float | None) -> None:
  flops = row.get("flops_per_step")
  for name in ("jax", "torch"):
    rate = flops / row[f"{name}_median_s"] / 1e9 if flops else None
    row[f"{name}_gflops"] = rate
    row[f"{name}_pct_peak"] = (100 * rate / peak_gflops
                               if rate and peak_gflops else None)


def table(rows: list[dict]) -> str:
  out = ["| preset | config | batch | JAX images/s | PyTorch images/s |"
         " JAX / PyTorch (best steps) | GFLOP/step (XLA) | JAX GFLOP/s"
         " (% peak) | PyTorch GFLOP/s (% peak) | step-0 loss rel diff |"
         " load avg |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    head = f"| {r['group']} | `{r['config']}` | {r.get('batch', '?')} |"
    if "error" in r:
      out.append(head + f" failed: {r['error'][:150]} | | | | | | | |")
      continue
    out.append(
        head + f" {r['jax_images_per_s']:.1f} | {r['torch_images_per_s']:.1f}"
        f" | {r['ratio']:.2f} ({r['ratio_best']:.2f}) |"
        f" {fmt(r['flops_per_step'] and r['flops_per_step'] / 1e9, '.2f')} |"
        f" {fmt(r['jax_gflops'], '.1f')} ({fmt(r['jax_pct_peak'], '.1f')}%)"
        f" | {fmt(r['torch_gflops'], '.1f')}"
        f" ({fmt(r['torch_pct_peak'], '.1f')}%) | {r['loss0_rel']:.1e} |"
        f" {r['load_before'][0]:.1f}-{r['load_after'][0]:.1f} |")
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", default="demo,cifar10,tiny_imagenet,full",
                      help="comma-separated groups (demo, cifar10,"
                      " tiny_imagenet, full) or config specs[@batch]")
  parser.add_argument("--steps", type=int, default=10,
                      help="timed steps per framework")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed steps per framework (>= 1: the first"
                      " compares the losses)")
  parser.add_argument("--torch_threads", type=int, default=None,
                      help="PyTorch intra-op threads (default: PyTorch's"
                      " own choice)")
  parser.add_argument("--peak_gflops", type=float, default=None,
                      help="this CPU's float32 peak, instead of the estimate")
  parser.add_argument("--no_torch_flops", dest="torch_flops",
                      action="store_false",
                      help="skip PyTorch's FlopCounterMode step per row")
  args = parser.parse_args()
  if args.steps < 1:
    parser.error("--steps must be at least 1")
  rows_wanted = parse_rows(args.rows)

  start = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  peak = cpu_peak(args.peak_gflops)
  env = dict(jax_version=jax.__version__, jax_backend=jax.default_backend(),
             jax_devices=jax.device_count(), torch_version=torch.__version__,
             torch_threads=torch.get_num_threads(),
             torch_interop_threads=torch.get_num_interop_threads(),
             cpu_count=os.cpu_count(),
             xla_flags=os.environ.get("XLA_FLAGS", ""),
             load_start=os.getloadavg())
  print(f"jax {env['jax_version']} ({env['jax_backend']},"
        f" {env['jax_devices']} device(s)), torch {env['torch_version']}"
        f" ({env['torch_threads']} intra-op threads), os.cpu_count()"
        f" {env['cpu_count']}, XLA_FLAGS={env['xla_flags']!r}, load average"
        f" {' '.join(f'{v:.2f}' for v in env['load_start'])}", flush=True)
  print(f"CPU: {peak['model']}; peak float32: {peak['formula']}", flush=True)

  rows = []
  for group, spec, batch in rows_wanted:
    mirror.log(f"{spec} (batch {batch or 'of the config'}): building and"
               " compiling...")
    try:
      row = bench_row(group, spec, batch, args.steps, args.warmup,
                      args.torch_flops)
    except Exception as e:  # pylint: disable=broad-except
      row = dict(group=group, config=spec, batch=batch,
                 error=f"{type(e).__name__}: {str(e)[:400]}")
    if "error" not in row:
      add_flop_rates(row, peak["peak_gflops"])
      mirror.log(
          f"{spec} batch {row['batch']}: JAX {row['jax_images_per_s']:.1f},"
          f" PyTorch {row['torch_images_per_s']:.1f} images/s, ratio"
          f" {row['ratio']:.2f}; step-0 losses {row['jax_loss0']:.6g} /"
          f" {row['torch_loss0']:.6g}; load {row['load_after'][0]:.2f}")
    else:
      mirror.log(f"{spec}: {row['error']}")
    rows.append(row)
    gc.collect()
    jax.clear_caches()

  ok_rows = [r for r in rows if "error" not in r]
  bad = [r["config"] for r in ok_rows
         if not r["params_equal"] or r["loss0_rel"] >= mirror.LOSS_REL_TOL]
  ok = len(ok_rows) == len(rows) and not bad
  print("\n### Inverter train step on this CPU, JAX vs PyTorch (float32,"
        " random encoder weights)\n")
  print(table(rows))
  print(f"\nMedians of {args.steps} interleaved steps per framework after"
        f" {args.warmup} untimed (JAX compiled before them); JAX / PyTorch ="
        " JAX images/s over PyTorch images/s. GFLOP/s = XLA's cost-analysis"
        " FLOPs of the compiled JAX step / median step time, for both."
        f" Peak: {peak['formula']}. PyTorch intra-op threads"
        f" {env['torch_threads']}; load average at start"
        f" {env['load_start'][0]:.2f} on {env['cpu_count']} CPUs"
        + (" (busy: PyTorch suffers most, rerun on an idle machine)"
           if max(r.get("load_after", (0,))[0] for r in rows + [{}])
           > (os.cpu_count() or 1) * 0.75 else "") + ".")
  print("Same step in both: parameter counts "
        + ("equal" if all(r["params_equal"] for r in ok_rows) else "DIFFER")
        + ", step-0 losses within "
        f"{max((r['loss0_rel'] for r in ok_rows), default=0):.1e} relative"
        f" (limit {mirror.LOSS_REL_TOL:g})"
        + (f"; FAILED for {', '.join(bad)}." if bad else "."))
  elapsed = time.perf_counter() - start
  print(f"Total wall time {elapsed:.0f} s.")
  result = dict(benchmark="cpu_train_step", steps=args.steps,
                warmup=args.warmup, env=env, peak=peak, rows=rows,
                wall_s=elapsed, ok=ok)
  line = json.dumps(result)
  print(line)
  if os.environ.get("OUT"):
    path = pathlib.Path(os.environ["OUT"]) / "cpu_train_step.json"
    path.write_text(line + "\n")
    mirror.log(f"wrote {path}")
  if not ok:
    raise SystemExit(1)


if __name__ == "__main__":
  main()
