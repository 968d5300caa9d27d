"""The training loop shared by inverters and encoder classifiers.

`run` resumes from the newest checkpoint in the workdir (train state and
input position, `inverter.checkpointing`), trains to `num_train_steps` while
logging loss, images/s and ETA, checkpoints and evaluates periodically, and
makes interruptions harmless: on SIGTERM (or Ctrl-C on one host) it
finishes the step, saves, flushes metrics and raises
`preemption.Interrupted`; a diverged loss is never saved. Because the input
stream continues at the saved position, an interrupted and resumed run ends
with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from etils import epath

from inverter import checkpointing, errors, preemption
from inverter import data as data_lib
from inverter.data import position as data_position

Batch = dict[str, np.ndarray]
Metrics = dict[str, jax.Array]


class DivergedError(errors.UserError, FloatingPointError):
  """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class Task:
  """What a kind of training adds to the loop."""

  # (state, global batch) -> (state, metrics of this step, summed over a
  # logging window; must include 'loss').
  train_step: Callable[[Any, dict[str, jax.Array]], tuple[Any, Metrics]]
  # (summed metrics, steps in the window) -> (TensorBoard scalars, the
  # part of the progress line that describes them).
  summarize: Callable[[dict[str, float], int], tuple[dict[str, float], str]]
  # (state, step) -> None: the periodic evaluation.
  evaluate: Callable[[Any, int], Any]
  # Batch entries the step takes; labels are read only when listed.
  batch_keys: tuple[str, ...] = ("image",)


def format_seconds(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def metric_writer(workdir: epath.Path, *,
                  asynchronous: bool = True) -> metric_writers.MetricWriter:
  """TensorBoard summaries, written by process 0 only, and no console echo.

  clu's default writer also logs every scalar, which put a second, third and
  fourth line beside the loop's own progress line; the console keeps that
  one line per window (and the evaluation's), TensorBoard gets the scalars.
  """
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  writer = metric_writers.SummaryWriter(str(workdir))
  return metric_writers.AsyncWriter(writer) if asynchronous else writer


def run(config: ml_collections.ConfigDict, workdir: epath.Path,
        initial_state: Any, task: Task, *, writer,
        data_sharding: jax.sharding.Sharding,
        learning_rate: optax.Schedule) -> Any:
  """Trains from the newest checkpoint (or `initial_state`) to the end.

  Returns the final train state; raises `preemption.Interrupted` after
  saving when a signal stops it early.
  """
  manager = checkpointing.manager(workdir, config)
  try:
    step = manager.latest_step() or 0
    state, saved_position = initial_state, None
    if step:
      state, saved_position = checkpointing.restore(manager, step,
                                                    initial_state)
      logging.info("Resumed from the checkpoint at step %d in %s.", step,
                   workdir)
    if step >= config.num_train_steps:
      logging.info("Already trained for %d >= num_train_steps=%d steps.",
                   step, config.num_train_steps)
      return state
    start = data_position.start(saved_position, config.data,
                                seed=config.seed, step=step,
                                global_batch_size=config.batch_size)
    return _loop(config, state, step, start, task, manager, writer,
                 data_sharding, learning_rate)
  finally:
    manager.wait_until_finished()
    manager.close()


def _loop(config, state, start_step: int, start_position: int, task: Task,
          manager, writer, data_sharding, learning_rate) -> Any:
  local_batch_size = config.batch_size // jax.process_count()
  batches: Iterator[Batch] = data_lib.train_iterator(
      config.data, local_batch_size=local_batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      with_labels="label" in task.batch_keys, start=start_position)
  sums: Metrics = {}
  run_start = window_start = time.monotonic()
  window_step = start_step
  last_saved = start_step
  next_position = start_position

  def check_finite(value: float, what: str) -> None:
    if not np.isfinite(value):
      raise DivergedError(
          f"Training diverged: {what} is {value}. Nothing was saved after"
          f" step {last_saved}; lower optimizer.learning_rate (now"
          f" {config.optimizer.learning_rate})"
          + (" or use compute_dtype=float32" if config.get(
              "compute_dtype", "float32") != "float32" else "")
          + ", then rerun: it resumes from the last good checkpoint.")

  def save(step: int, loss: jax.Array, force: bool) -> None:
    nonlocal last_saved
    check_finite(float(loss), f"the loss at step {step}")
    position = data_position.payload(
        config.data, seed=config.seed, step=step,
        global_batch_size=config.batch_size, local_next=next_position)
    if checkpointing.save(manager, step, state, position, force=force):
      last_saved = step

  with preemption.Watcher() as watcher:
    for step in range(start_step + 1, config.num_train_steps + 1):
      batch = next(batches)
      next_position = data_position.next_start(batch)
      state, metrics = task.train_step(state, {
          k: jax.make_array_from_process_local_data(data_sharding, batch[k])
          for k in task.batch_keys})
      sums = {k: sums.get(k, 0) + v for k, v in metrics.items()}
      is_last = step == config.num_train_steps
      if step % config.log_every_steps == 0 or is_last:
        steps = step - window_step
        totals = {k: float(v) for k, v in sums.items()}
        check_finite(totals["loss"] / steps,
                     f"the mean loss over steps {window_step + 1}-{step}")
        scalars, described = task.summarize(totals, steps)
        elapsed = time.monotonic() - window_start
        images_per_sec = steps * config.batch_size / elapsed
        eta = (config.num_train_steps - step) * elapsed / steps
        writer.write_scalars(step, scalars | {
            "train/images_per_sec": images_per_sec,
            "steps_per_sec": steps / elapsed,
            "uptime": time.monotonic() - run_start,
            "learning_rate": float(learning_rate(step - 1))})
        logging.info("step %d/%d: %s, %.1f images/s, ETA %s", step,
                     config.num_train_steps, described, images_per_sec,
                     format_seconds(eta))
        sums = {}
        window_start, window_step = time.monotonic(), step
      if watcher.should_stop(step):
        if last_saved != step:
          save(step, metrics["loss"], force=True)
        manager.wait_until_finished()
        writer.flush()
        raise preemption.Interrupted(step, watcher.signum)
      if step % config.checkpoint_every_steps == 0 or is_last:
        save(step, metrics["loss"], force=is_last)
      if step % config.eval_every_steps == 0 and not is_last:
        task.evaluate(state, step)
  return state
