"""Resumable stages: a command line, where it writes, and when it is done.

`run` runs the selected stages in order as subprocesses (the same command
lines a user would type), logging each to ROOT/logs/<stage>.log, skipping
the ones already done, and recording every finished stage's command, wall
time and git commit in ROOT/stages.json. An interrupted stage is simply run
again: the trainers resume exactly from their last checkpoint.

A stage's recorded wall time is that of all its attempts: while it runs, the
time spent so far is kept in ROOT/logs/<stage>.seconds (updated every
`HEARTBEAT_SECONDS`), so even a killed driver loses at most that much.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from inverter import errors

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


# How often a running stage's time so far is written down.
HEARTBEAT_SECONDS = 30.0

# A stage command's first word that means "this Python" (shown as typed).
PYTHON = "python"


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  # The command line as a user types it; PYTHON runs as sys.executable.
  command: tuple[str, ...]
  # Whether the stage's outputs are complete; None for a stage that runs
  # every time (e.g. a report rebuilt from what exists), judged by its exit
  # code alone.
  done: Callable[[], bool] | None
  description: str = ""

  def shell(self) -> str:
    return " ".join(shlex.quote(part) for part in self.command)


class StageFailed(RuntimeError):
  """A stage exited with an error or did not finish its outputs."""


class UnknownStageError(errors.UserError, ValueError):
  """A --stages pattern matches no stage."""


def select(stages: Sequence[Stage], patterns: str) -> list[Stage]:
  """The stages whose names match any comma-separated fnmatch pattern."""
  if not patterns:
    return list(stages)
  wanted = [p.strip() for p in patterns.split(",") if p.strip()]
  chosen = [s for s in stages
            if any(fnmatch.fnmatchcase(s.name, p) for p in wanted)]
  unmatched = [p for p in wanted
               if not any(fnmatch.fnmatchcase(s.name, p) for s in stages)]
  if unmatched:
    raise UnknownStageError(f"No stage matches {unmatched}; stages:"
                     f" {', '.join(s.name for s in stages)}.")
  return chosen


def git_commit() -> str:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--",
                            "inverter", "configs"],
                           cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
    return out.strip() + ("+uncommitted" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


LEDGER = "stages.json"


def records(root: pathlib.Path) -> dict[str, dict[str, Any]]:
  """ROOT/stages.json: {stage: {command, seconds, finished, commit,
  attempts[, note]}} of every finished stage; {} before the first."""
  path = root / LEDGER
  return json.loads(path.read_text()) if path.exists() else {}


def _record(root: pathlib.Path, stage: Stage, seconds: float, commit: str,
            attempts: int) -> None:
  ledger = records(root)
  ledger[stage.name] = dict(
      command=stage.shell(), seconds=round(seconds, 1),
      finished=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      commit=commit, attempts=attempts)
  (root / LEDGER).write_text(json.dumps(ledger, indent=2))


class _Stopwatch:
  """A stage's wall time over all its attempts, kept in a small file.

  The file holds the seconds and attempts of the earlier attempts plus the
  current one so far; it is rewritten atomically at every `tick`.
  """

  def __init__(self, path: pathlib.Path):
    self.path = path
    earlier = json.loads(path.read_text()) if path.exists() else {}
    self.earlier = float(earlier.get("seconds", 0.0))
    self.attempts = int(earlier.get("attempts", 0)) + 1
    self.start = time.monotonic()

  @property
  def this_attempt(self) -> float:
    return time.monotonic() - self.start

  @property
  def total(self) -> float:
    return self.earlier + self.this_attempt

  def tick(self) -> None:
    partial = self.path.with_suffix(".tmp")
    partial.write_text(json.dumps(
        dict(seconds=round(self.total, 1), attempts=self.attempts)))
    partial.replace(self.path)


def _call(argv: list[str], log: pathlib.Path, stopwatch: _Stopwatch) -> int:
  """Runs argv with its output appended to log; returns its exit code."""
  with log.open("a") as out:
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out,
                            stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
      while True:
        stopwatch.tick()
        try:
          return proc.wait(timeout=HEARTBEAT_SECONDS)
        except subprocess.TimeoutExpired:
          continue
    finally:
      stopwatch.tick()
      if proc.poll() is None:  # The driver itself was interrupted.
        proc.terminate()  # The trainer saves its step and exits.
        proc.wait()


def run(stages: Sequence[Stage], root: pathlib.Path, *, dry_run: bool = False,
        echo: Callable[[str], None] = print) -> None:
  """Runs the not-yet-done stages in order; raises StageFailed on the
  first failure (its log names the cause)."""
  root.mkdir(parents=True, exist_ok=True)
  for i, stage in enumerate(stages, 1):
    head = f"[{i}/{len(stages)}] {stage.name}"
    if stage.done is not None and stage.done():
      echo(f"{head}: done, skipped")
      continue
    if dry_run:
      echo(f"{head}: would run\n  {stage.shell()}")
      continue
    log = root / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    stopwatch = _Stopwatch(log.with_suffix(".seconds"))
    resumed = (f", attempt {stopwatch.attempts} after"
               f" {stopwatch.earlier / 60:.1f} min before"
               if stopwatch.attempts > 1 else "")
    echo(f"{head}: running (log {log}{resumed})\n  {stage.shell()}")
    commit = git_commit()  # The code as the stage starts.
    argv = list(stage.command)
    if argv[0] == PYTHON:
      argv[0] = sys.executable
    code = _call(argv, log, stopwatch)
    if code != 0 or (stage.done is not None and not stage.done()):
      raise StageFailed(
          f"Stage {stage.name} failed (exit {code}) after"
          f" {stopwatch.this_attempt:.0f} s; see {log}. Rerun to retry it:"
          " finished stages are skipped and an interrupted training resumes"
          " from its last checkpoint.")
    _record(root, stage, stopwatch.total, commit, stopwatch.attempts)
    stopwatch.path.unlink()
    echo(f"{head}: finished in {stopwatch.total / 60:.1f} min")
