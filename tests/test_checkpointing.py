"""Checkpoint layout: train state plus input position, and older workdirs."""

import jax
import numpy as np
import orbax.checkpoint as ocp

from inverter import checkpointing, presets, train


def tiny_experiment():
  config = presets.get_config("conv1", "test")
  return config, train.setup(config)


def test_state_and_position_round_trip(tmp_path):
  config, exp = tiny_experiment()
  state = train.create_train_state(exp, seed=1)
  position = {"next": [96], "process_count": 1}
  manager = checkpointing.manager(tmp_path, config)
  checkpointing.save(manager, 3, state, position, force=True)
  manager.wait_until_finished()
  manager.close()
  reader = checkpointing.reader(tmp_path)
  restored, got = checkpointing.restore(
      reader, 3, train.create_train_state(exp, seed=2))
  assert got == position
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)


def test_checkpoints_from_before_the_input_position_still_restore(tmp_path):
  """Older workdirs hold one unnamed item per step."""
  config, exp = tiny_experiment()
  state = train.create_train_state(exp, seed=1)
  legacy = ocp.CheckpointManager(checkpointing.directory(tmp_path))
  legacy.save(5, args=ocp.args.StandardSave(state))
  legacy.wait_until_finished()
  legacy.close()
  restored, position = checkpointing.restore(
      checkpointing.reader(tmp_path), 5, train.create_train_state(exp, 2))
  assert position is None
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  # And a training run continues such a workdir with the new layout.
  config.num_train_steps = 6
  manager = checkpointing.manager(tmp_path, config)
  checkpointing.save(manager, 6, restored, {"next": [48]}, force=True)
  manager.wait_until_finished()
  manager.close()
  assert checkpointing.restore(checkpointing.reader(tmp_path), 6,
                               restored)[1] == {"next": [48]}
