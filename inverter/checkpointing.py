"""Orbax checkpoints of a training run: train state plus input position.

A checkpoint is the step directory ``checkpoints/<step>/`` with two items:
``state`` (params, optimizer state and step; every process writes and reads
its own shards) and ``data`` (JSON, written once: where every process's
input stream stands, see `inverter.data.position`). Orbax writes a step into
a temporary directory and renames it (on GCS: writes a commit marker) only
when every item is complete, so a process killed during a write leaves no
half-written step that a restart would take for the latest one.

Checkpoints written before the input position was saved (one unnamed
``default`` item) still restore, without a position.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

STATE = "state"
DATA = "data"
_LEGACY_ITEM = "default"


def directory(workdir: str | epath.Path) -> epath.Path:
  return epath.Path(workdir) / "checkpoints"


def manager(workdir: str | epath.Path,
            config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """The manager a training run saves with (asynchronously)."""
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.keep_checkpoints,
          save_interval_steps=config.checkpoint_every_steps,
          enable_async_checkpointing=True,
          create=True))


def reader(workdir: str | epath.Path) -> ocp.CheckpointManager:
  """A read-only manager (restoring, e.g. in Colab, writes nothing)."""
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(create=False, read_only=True,
                                           save_interval_steps=0))


def save(manager_: ocp.CheckpointManager, step: int, state: Any,
         data: dict[str, Any], *, force: bool = False) -> bool:
  """Starts saving `state` and the input position `data` at `step`."""
  return manager_.save(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardSave(state),
      DATA: ocp.args.JsonSave(data)}), force=force)


def _is_legacy(manager_: ocp.CheckpointManager, step: int) -> bool:
  return (epath.Path(manager_.directory) / str(step) / _LEGACY_ITEM).exists()


def restore(manager_: ocp.CheckpointManager, step: int,
            target: Any) -> tuple[Any, dict[str, Any] | None]:
  """(state, input position or None) of the checkpoint at `step`.

  `target` is a train state or its abstract shapes (`jax.ShapeDtypeStruct`
  leaves with shardings); restored arrays take its shardings, so a
  checkpoint from any number of devices or processes restores on this
  run's mesh.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  if _is_legacy(manager_, step):
    legacy = ocp.CheckpointManager(
        manager_.directory,
        options=ocp.CheckpointManagerOptions(read_only=True,
                                             save_interval_steps=0))
    try:
      return legacy.restore(step, args=ocp.args.StandardRestore(abstract)), None
    finally:
      legacy.close()
  restored = manager_.restore(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardRestore(abstract),
      DATA: ocp.args.JsonRestore()}))
  return restored[STATE], restored[DATA]


def restore_latest(workdir: str | epath.Path, target: Any) -> Any | None:
  """The newest train state in `workdir` (shaped and placed like `target`),
  or None if it has no checkpoint; reads only."""
  manager_ = reader(workdir)
  try:
    step = manager_.latest_step()
    if step is None:
      return None
    return restore(manager_, step, target)[0]
  finally:
    manager_.close()


def require_latest(workdir: str | epath.Path, target: Any) -> Any:
  """`restore_latest` for evaluation, which has nothing to do without one."""
  state = restore_latest(workdir, target)
  if state is None:
    raise FileNotFoundError(
        f"No checkpoint in {directory(workdir)} to evaluate; train first"
        " with --mode=train (the default).")
  return state
