r"""Encoder training speed, JAX vs PyTorch, in one process on this host.

Times one classification train step of the AlexNet-shaped encoder (softmax
cross-entropy on fc8, dropout on, SGD with momentum) in JAX (jitted
`inverter.models.alexnet.from_config`) and the same network and step in
PyTorch (NCHW, conv groups, LocalResponseNorm, ceil-mode max-pooling), on a
fixed random batch. Steps of all implementations are interleaved, so a load
change on a shared machine hits them alike; medians (and best steps) are
quoted. PyTorch's CPU threads slow down far more than XLA's when the machine
is busy (10x at a load average of 2x the cores, against 1.5x for JAX), so the
JAX/PyTorch ratio only means something on an otherwise idle machine: the
script prints the load average, and `--torch_threads 1` gives a busy-machine
comparison that is less skewed.

  python benchmarks/encoder_train_speed.py                       # both nets
  python benchmarks/encoder_train_speed.py --which cifar --steps 20
  python benchmarks/encoder_train_speed.py --group_impl split,auto

Networks: 'cifar' is the encoder block of configs/encoders/cifar10.py when
that file exists, else a stated fallback (a reduced caffenet at 32x32);
'caffenet' is the full-size network at 227 (`presets.encoder_config`).
This is a benchmark, not product code: it imports torch.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # Run as a script from a checkout.
  sys.path.insert(0, str(REPO_ROOT))

from inverter import presets  # pylint: disable=g-import-not-at-top
from inverter.models import alexnet, layers  # pylint: disable=g-import-not-at-top

CIFAR_CONFIG = REPO_ROOT / "configs" / "encoders" / "cifar10.py"

LEARNING_RATE = 0.01
MOMENTUM = 0.9


def cifar_encoder_config():
  """(encoder config block, where it came from)."""
  if CIFAR_CONFIG.exists():
    spec = importlib.util.spec_from_file_location("cifar10_config",
                                                  CIFAR_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config().encoder, str(CIFAR_CONFIG.relative_to(REPO_ROOT))
  cfg = presets.encoder_config("caffenet")
  cfg.input_size = 32
  cfg.conv1_kernel, cfg.conv1_stride, cfg.conv1_padding = 5, 1, 2
  cfg.widths = (48, 128, 192, 192, 128)
  cfg.fc_width = 1024
  cfg.num_classes = 10
  return cfg, "fallback (configs/encoders/cifar10.py not found)"


# --------------------------------------------------------------------- JAX


def make_jax_step(cfg, group_impl: str, batch: int):
  """A jitted (params, opt_state, images, labels, step) -> (..., loss)."""
  cfg = cfg.copy_and_resolve_references()
  cfg.group_impl = group_impl
  model = alexnet.from_config(cfg)
  size = cfg.input_size
  images = jnp.asarray(np.random.default_rng(0).normal(
      0, 60, (batch, size, size, 3)).astype(np.float32))
  labels = jnp.asarray(np.random.default_rng(1).integers(
      0, cfg.num_classes, batch))
  params = jax.jit(lambda x: model.init(jax.random.key(0), x, until="fc8"))(
      images[:1])["params"]
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
  opt_state = tx.init(params)

  def loss_fn(params, x, y, rng):
    logits = model.apply({"params": params}, x, train=True, until="fc8",
                         rngs={"dropout": rng})["fc8"]
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), y).mean()

  # Parameters and optimizer state are donated (updated in place), as the
  # project's train steps do and as PyTorch's optimizer does.
  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, x, y, i):
    rng = jax.random.fold_in(jax.random.key(2), i)
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  state = {"params": params, "opt": opt_state, "i": 0}

  def run():
    state["params"], state["opt"], loss = step(
        state["params"], state["opt"], images, labels, state["i"])
    state["i"] += 1
    loss.block_until_ready()
    return float(loss)

  return run


# ----------------------------------------------------------------- PyTorch


def make_torch_step(cfg, batch: int):
  """The same network and train step in PyTorch; returns a step callable."""
  import torch
  from torch import nn

  w1, w2, w3, w4, w5 = (int(w) for w in cfg.widths)
  g = int(cfg.groups)
  lrn = dict(cfg.lrn)
  norm = lambda: nn.LocalResponseNorm(int(lrn["size"]), alpha=lrn["alpha"],
                                      beta=lrn["beta"], k=lrn["k"])
  pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)

  def block(i):
    order = {"caffenet": ("pool", "norm"), "alexnet": ("norm", "pool")}
    return [pool() if op == "pool" else norm() for op in order[cfg.arch]]

  features = nn.Sequential(
      nn.Conv2d(3, w1, int(cfg.conv1_kernel), int(cfg.conv1_stride),
                int(cfg.conv1_padding)),
      nn.ReLU(), *block(1),
      nn.Conv2d(w1, w2, 5, 1, 2, groups=g), nn.ReLU(), *block(2),
      nn.Conv2d(w2, w3, 3, 1, 1), nn.ReLU(),
      nn.Conv2d(w3, w4, 3, 1, 1, groups=g), nn.ReLU(),
      nn.Conv2d(w4, w5, 3, 1, 1, groups=g), nn.ReLU(), pool(),
      nn.Flatten())
  size = int(cfg.input_size)
  with torch.no_grad():
    flat = features(torch.zeros(1, 3, size, size)).shape[1]
  fc = int(cfg.fc_width)
  model = nn.Sequential(
      features, nn.Linear(flat, fc), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(fc, int(cfg.num_classes)))
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE,
                        momentum=MOMENTUM)
  loss_fn = nn.CrossEntropyLoss()
  gen = torch.Generator().manual_seed(0)
  images = torch.randn(batch, 3, size, size, generator=gen) * 60
  labels = torch.randint(0, int(cfg.num_classes), (batch,), generator=gen)

  def run():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    opt.step()
    return loss.item()

  return run


# ------------------------------------------------------------------ timing


def time_interleaved(runs: dict, warmup: int, steps: int):
  """({name: median seconds per step}, {name: all step times}); the steps
  of the callables are interleaved."""
  for name, run in runs.items():
    start = time.perf_counter()
    for _ in range(warmup):
      run()
    print(f"  {name}: warm-up ({warmup} steps, incl. compile)"
          f" {time.perf_counter() - start:.1f} s", flush=True)
  times = {name: [] for name in runs}
  for _ in range(steps):
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  medians = {name: statistics.median(t) for name, t in times.items()}
  return medians, times


def bench(net: str, cfg, source: str, impls, batch: int, warmup: int,
          steps: int, with_torch: bool):
  print(f"\n== {net}: {source}")
  print(f"   arch={cfg.arch} input={cfg.input_size} conv1=k{cfg.conv1_kernel}"
        f"/s{cfg.conv1_stride}/p{cfg.conv1_padding} widths={tuple(cfg.widths)}"
        f" fc={cfg.fc_width} classes={cfg.num_classes} groups={cfg.groups}"
        f" batch={batch} warmup={warmup} steps={steps}")
  runs = {}
  for impl in impls:
    runs[f"jax[{impl}]"] = make_jax_step(cfg, impl, batch)
  if with_torch:
    runs["torch"] = make_torch_step(cfg, batch)
  load_before = os.getloadavg()[0]
  medians, times = time_interleaved(runs, warmup, steps)
  load_after = os.getloadavg()[0]
  print(f"   load average {load_before:.1f} -> {load_after:.1f} on"
        f" {os.cpu_count()} CPUs" + (
            "  (busy machine: PyTorch's threads suffer most; rerun)"
            if max(load_before, load_after) > os.cpu_count() else ""))
  best = {name: min(t) for name, t in times.items()}
  for name, median in medians.items():
    ratio = ""
    if with_torch and name != "torch":
      ratio = (f"  JAX/PyTorch {medians['torch'] / median:.2f}"
               f" (best steps {best['torch'] / best[name]:.2f})")
    print(f"   {name:<24} {batch / median:7.1f} images/s (median"
          f" {median * 1e3:.0f} ms; best {best[name] * 1e3:.0f} ms, worst"
          f" {max(times[name]) * 1e3:.0f} ms){ratio}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--which", choices=("cifar", "caffenet", "both"),
                      default="both")
  parser.add_argument("--steps", type=int, default=None,
                      help="timed steps per implementation (default: cifar 15,"
                      " caffenet 5)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=None,
                      help="default: cifar 128, caffenet 32")
  parser.add_argument("--group_impl", "--conv_impl", dest="impls",
                      default="auto",
                      help="comma-separated CaffeConv implementations to time"
                      " side by side, e.g. 'split,auto'")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--torch_threads", type=int, default=None,
                      help="PyTorch intra-op threads (default: PyTorch's"
                      " own choice, one per core)")
  args = parser.parse_args()

  import torch
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  impls = [s.strip() for s in args.impls.split(",") if s.strip()]
  print(f"jax {jax.__version__} (backend {jax.default_backend()},"
        f" {jax.device_count()} device(s)), torch {torch.__version__}"
        f" (intra-op threads {torch.get_num_threads()}), os.cpu_count()="
        f"{os.cpu_count()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print("CaffeConv group_impl: " + ", ".join(
      f"{i} (= {layers.resolve_group_impl(i)})" for i in impls))
  nets = ("cifar", "caffenet") if args.which == "both" else (args.which,)
  for net in nets:
    if net == "cifar":
      cfg, source = cifar_encoder_config()
      batch, steps = args.batch_size or 128, args.steps or 15
    else:
      cfg, source = presets.encoder_config("caffenet"), "presets.encoder_config('caffenet')"
      batch, steps = args.batch_size or 32, args.steps or 5
    bench(net, cfg, source, impls, batch, args.warmup, steps,
          not args.no_torch)


if __name__ == "__main__":
  main()
