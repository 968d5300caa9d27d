"""Joining a multi-process (multi-host) JAX run before anything else.

`jax.distributed.initialize` must run before JAX touches a device. Three
ways to ask for it:

* explicitly: coordinator address, process count and process id from the
  `--coordinator_address/--num_processes/--process_id` flags or the
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables
  (any cluster, and several local processes in tests);
* `--distributed=on`: let JAX detect the cluster (Cloud TPU VM slices,
  SLURM, Open MPI, Kubernetes); `launch/tpu_vm.sh` does this;
* `--distributed=auto` (the default): explicit settings if given, else JAX's
  detection only where a scheduler says there are several tasks (SLURM,
  Open MPI, a multi-host TPU worker list); a plain single-host run does
  nothing extra.
"""

from __future__ import annotations

import dataclasses
import os

import jax
from absl import logging

from inverter import errors

MODES = ("auto", "on", "off")


class DistributedConfigError(errors.UserError, ValueError):
  """The multi-process settings are incomplete or contradictory."""


@dataclasses.dataclass(frozen=True)
class Settings:
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  @property
  def explicit(self) -> bool:
    return any(v is not None for v in dataclasses.astuple(self))


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError as e:
    raise DistributedConfigError(f"{name}={value!r} is not an integer.") from e


def settings_from(coordinator_address: str | None, num_processes: int | None,
                  process_id: int | None) -> Settings:
  """Flags first, then the JAX_* environment variables."""
  return Settings(
      coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
      num_processes if num_processes is not None
      else _env_int("JAX_NUM_PROCESSES"),
      process_id if process_id is not None else _env_int("JAX_PROCESS_ID"))


def _scheduler_has_several_tasks() -> bool:
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    count = os.environ.get(name, "")
    if count.isdigit() and int(count) > 1:
      return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def check(settings: Settings) -> None:
  """Raises DistributedConfigError naming what is missing or wrong."""
  if not settings.explicit:
    return
  missing = [f"--{k} (or JAX_{k.upper()})"
             for k, v in dataclasses.asdict(settings).items() if v is None]
  if missing:
    raise DistributedConfigError(
        "Multi-process settings are incomplete: missing "
        + ", ".join(missing) + ". Give all three, or none (and"
        " --distributed=on to let JAX detect a TPU slice or SLURM job).")
  if settings.num_processes < 1 or not (
      0 <= settings.process_id < settings.num_processes):
    raise DistributedConfigError(
        f"--process_id={settings.process_id} must lie in [0,"
        f" --num_processes={settings.num_processes}).")


def initialize(mode: str, settings: Settings) -> bool:
  """Joins the multi-process run if asked; returns whether it did."""
  if mode not in MODES:
    raise DistributedConfigError(f"--distributed={mode!r}: use one of {MODES}.")
  check(settings)
  if mode == "off":
    return False
  if settings.explicit and settings.num_processes == 1:
    return False
  if not settings.explicit and mode == "auto" and not (
      _scheduler_has_several_tasks()):
    return False
  # CPU processes talk over gloo (harmless for TPU/GPU backends).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if settings.explicit:
    jax.distributed.initialize(settings.coordinator_address,
                               num_processes=settings.num_processes,
                               process_id=settings.process_id)
  else:
    jax.distributed.initialize()
  logging.info("Joined a run of %d processes as process %d (%d local of %d"
               " devices).", jax.process_count(), jax.process_index(),
               jax.local_device_count(), jax.device_count())
  return True
