"""Noticing a preemption, so the trainer can save and exit in time.

Cloud TPU VMs and spot GPU hosts send SIGTERM shortly before they take the
machine away. On several processes JAX's distributed runtime catches the
signal on whichever host receives it and agrees with all hosts on a step at
which every one of them stops (`reached_preemption_sync_point`). On one
process this module catches SIGTERM (and Ctrl-C, SIGINT) itself; a second
Ctrl-C interrupts at once, as usual.
"""

from __future__ import annotations

import signal
import threading
import types

import jax
from absl import logging
from jax.experimental import multihost_utils


class Interrupted(Exception):
  """Training stopped early for a signal, after saving a checkpoint."""

  def __init__(self, step: int, signum: int):
    self.step = step
    self.signum = signum
    super().__init__(
        f"Stopped by {signal.Signals(signum).name} after step {step}; the"
        " checkpoint of that step is saved. Rerun the same command to"
        " resume exactly where it stopped.")


class Watcher:
  """Context manager; `should_stop(step)` after every step says whether to
  save and stop now (the same answer on every process)."""

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self) -> None:
    self.signum: int | None = None
    self._previous: dict[int, object] = {}
    self._multiprocess = jax.process_count() > 1

  def __enter__(self) -> Watcher:
    # Signal handlers can only be set from the main thread (tests and
    # notebooks may train elsewhere; they are then not interruptible here).
    if (not self._multiprocess
        and threading.current_thread() is threading.main_thread()):
      for signum in self._SIGNALS:
        self._previous[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning("Received %s: finishing this step, then saving a"
                    " checkpoint and exiting.", signal.Signals(signum).name)

  def should_stop(self, step: int) -> bool:
    if self._multiprocess:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signum = signal.SIGTERM
        logging.warning("Preemption notice: all processes stop after step"
                        " %d.", step)
        return True
      return False
    return self.signum is not None
