"""Tiny trained inverters shared by the analysis, loading and notebook tests.

`trained(tmp_path_factory)` trains, once per test session, the inverters of
configs/{conv1,fc8,fc8_top5}.py:test (4 steps each, on the 8 virtual CPU
devices of conftest) against one saved, randomly initialised encoder, and
returns {name: workdir} plus 'encoder'. Under pytest-xdist the workers share
one copy: the first to arrive trains under a file lock, the others wait and
reuse it. Saving the encoder once (instead of `encoder.weights=random`) also
tests that restoring follows the encoder reference in config.json.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import pathlib

import jax
import numpy as np

from inverter import encoder_weights, presets, train
from inverter.models import encoders

NAMES = ("conv1", "fc8", "fc8_top5")


def config_for(name: str, encoder_dir: str):
  """configs/<name>.py:test (as `--config=configs/<name>.py:test` would)."""
  config = importlib.import_module(f"configs.{name}").get_config("test")
  config.encoder.weights = encoder_dir
  return config


def _save_random_encoder(path: pathlib.Path) -> None:
  """He-initialised params from the shapes alone (nothing to compile)."""
  cfg = presets.get_config("fc8", "test").encoder
  model = encoders.from_config(cfg)
  shapes = jax.eval_shape(lambda: encoder_weights.init_params(model, 0))
  rng = np.random.default_rng(0)

  def init(path_, leaf):
    if jax.tree_util.keystr(path_).endswith("['bias']"):
      return np.zeros(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(
        np.float32)

  params = jax.tree_util.tree_map_with_path(init, shapes)
  encoder_weights.save(str(path), params, cfg,
                       preprocessing=dict(cfg.preprocessing.to_dict(),
                                          input_size=cfg.input_size),
                       source=dict(note="random He init for the tests"))


def trained(tmp_path_factory) -> dict[str, str]:
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # Shared by all workers of this session.
  root = base / "tiny_inverters"
  root.mkdir(exist_ok=True)
  paths = {name: str(root / name) for name in NAMES}
  paths["encoder"] = str(root / "encoder")
  with open(root / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      done = root / "done.json"
      if not done.exists():
        _save_random_encoder(root / "encoder")
        for name in NAMES:
          train.train_and_evaluate(config_for(name, paths["encoder"]),
                                   paths[name])
        done.write_text(json.dumps(paths))
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return paths
