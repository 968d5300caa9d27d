r"""Train-step throughput (images/s) of an inverter config on this host.

Times the jitted train step alone (encoder forward + decoder + L2 loss + Adam)
on a fixed random batch, so the number is the model's cost, not the input
pipeline's. Encoder weights are random: speed does not depend on them.

  python benchmarks/train_step_throughput.py configs/fc6.py:demo
  python benchmarks/train_step_throughput.py configs/fc6.py --steps 5
"""

import argparse

import jax

import step_timer


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("config", help="e.g. configs/fc6.py:demo")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=None)
  args = parser.parse_args()

  config = step_timer.load_config(args.config)
  if args.batch_size:
    config.batch_size = args.batch_size
  result = step_timer.time_train_step(config, args.steps)
  size = config.encoder.input_size
  compile_s, median = result["compile_s"], result["median_s"]
  print(f"config={args.config} layer={config.layer} input={size}"
        f" batch={config.batch_size} devices={jax.device_count()}"
        f" backend={jax.default_backend()}")
  print(f"compile+first step: {compile_s:.1f} s; step median {median * 1e3:.1f}"
        f" ms (min {result['min_s'] * 1e3:.1f}, max"
        f" {result['max_s'] * 1e3:.1f}, n={result['steps']})")
  print(f"train-step throughput: {config.batch_size / median:.1f} images/s")


if __name__ == "__main__":
  main()
