r"""Train-step throughput (images/s) of an inverter config on this host.

Times the jitted train step alone (encoder forward + decoder + L2 loss + Adam)
on a fixed random batch, so the number is the model's cost, not the input
pipeline's. Encoder weights are random: speed does not depend on them.

  python benchmarks/train_step_throughput.py configs/fc6.py:demo
  python benchmarks/train_step_throughput.py configs/fc6.py --steps 5
"""

import argparse
import importlib.util
import statistics
import time

import jax
import numpy as np

from inverter import train


def load_config(spec: str):
  """'configs/fc6.py:demo' -> the config, as --config= would load it."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("config", help="e.g. configs/fc6.py:demo")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=None)
  args = parser.parse_args()

  config = load_config(args.config)
  config.encoder.weights = "random"
  if args.batch_size:
    config.batch_size = args.batch_size
  exp = train.setup(config)
  state = train.create_train_state(exp, seed=0)
  step = train.make_train_step(exp)
  size = config.encoder.input_size
  images = train.global_batch(exp, np.random.default_rng(0).normal(
      0, 60, (config.batch_size, size, size, 3)).astype(np.float32))

  start = time.perf_counter()
  state, loss = step(state, exp.encoder_params, images)
  loss.block_until_ready()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, loss = step(state, exp.encoder_params, images)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  print(f"config={args.config} layer={config.layer} input={size}"
        f" batch={config.batch_size} devices={jax.device_count()}"
        f" backend={jax.default_backend()}")
  print(f"compile+first step: {compile_s:.1f} s; step median {median * 1e3:.1f}"
        f" ms (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f},"
        f" n={len(times)})")
  print(f"train-step throughput: {config.batch_size / median:.1f} images/s")


if __name__ == "__main__":
  main()
