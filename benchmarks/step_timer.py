"""What the benchmark scripts share: loading a config file and timing the
inverter's train step on random images (imported by the scripts next to it).
"""

from __future__ import annotations

import importlib.util
import statistics
import time

import numpy as np


def load_config(spec: str):
  """'configs/fc6.py:demo' -> the config, as --config= would load it."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def time_train_step(config, steps: int, warmup: int = 0) -> dict:
  """Compiles and times the train step of `config` (random encoder weights)
  at config.batch_size; the median is over `steps` after `warmup` steps."""
  # Imported here: callers may set XLA_FLAGS before JAX starts.
  import jax  # pylint: disable=g-import-not-at-top
  from inverter import train  # pylint: disable=g-import-not-at-top
  config.encoder.weights = "random"
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
  for _ in range(warmup):
    state, loss = step(state, exp.encoder_params, images)
  loss.block_until_ready()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, loss = step(state, exp.encoder_params, images)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return dict(batch=config.batch_size, layer=config.layer, input_size=size,
              compile_s=compile_s, median_s=median, min_s=min(times),
              max_s=max(times), steps=len(times),
              images_per_s=config.batch_size / median, loss=float(loss),
              backend=jax.default_backend(), devices=jax.device_count())
