"""Runs a tiny inverter on mocked TFDS imagenet2012; prints a JSON summary.

Used by test_end_to_end.py in a subprocess, because the number of (virtual
CPU) devices is fixed when JAX starts: `python tests/mock_imagenet_run.py
WORKDIR NUM_DEVICES`.
"""

import json
import os
import sys

workdir, num_devices = sys.argv[1], int(sys.argv[2])
os.environ["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count={num_devices}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from inverter import presets, train  # pylint: disable=g-import-not-at-top


def main():
  assert jax.device_count() == num_devices
  config = presets.get_config("conv2", "test,source=imagenet2012")
  config.data.data_dir = os.path.join(workdir, "no_tfds_here")
  config.data.resize_size = 40
  config.num_train_steps = 3
  config.checkpoint_every_steps = 3
  config.eval_every_steps = 100
  with tfds.testing.mock_data(num_examples=16,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    metrics = train.train_and_evaluate(config, workdir)
  state = train.restore_latest(train.setup(config), workdir)
  leaves = {jax.tree_util.keystr(k): float(np.abs(np.asarray(v)).sum())
            for k, v in jax.tree_util.tree_leaves_with_path(state.params)}
  print("SUMMARY " + json.dumps(dict(metrics=metrics, params=leaves)))


main()
