"""Resumable stages: a command line, where it writes, and when it is done.

`run` runs the selected stages in order as subprocesses (the same command
lines a user would type), logging each to ROOT/logs/<stage>.log, skipping
the ones already done, and recording every finished stage's command, wall
time and git commit in ROOT/stages.json. An interrupted stage is simply run
again: the trainers resume exactly from their last checkpoint.
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
from typing import Callable, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


# A stage command's first word that means "this Python" (shown as typed).
PYTHON = "python"


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  # The command line as a user types it; PYTHON runs as sys.executable.
  command: tuple[str, ...]
  # Whether the stage's outputs are complete.
  done: Callable[[], bool]
  description: str = ""

  def shell(self) -> str:
    return " ".join(shlex.quote(part) for part in self.command)


class StageFailed(RuntimeError):
  pass


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
    raise ValueError(f"No stage matches {unmatched}; stages:"
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


def _record(root: pathlib.Path, stage: Stage, seconds: float) -> None:
  path = root / "stages.json"
  records = json.loads(path.read_text()) if path.exists() else {}
  records[stage.name] = dict(
      command=stage.shell(), seconds=round(seconds, 1),
      finished=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      commit=git_commit())
  path.write_text(json.dumps(records, indent=2))


def run(stages: Sequence[Stage], root: pathlib.Path, *, dry_run: bool = False,
        echo: Callable[[str], None] = print) -> None:
  """Runs the not-yet-done stages in order; raises StageFailed on the
  first failure (its log names the cause)."""
  root.mkdir(parents=True, exist_ok=True)
  for i, stage in enumerate(stages, 1):
    head = f"[{i}/{len(stages)}] {stage.name}"
    if stage.done():
      echo(f"{head}: done, skipped")
      continue
    if dry_run:
      echo(f"{head}: would run\n  {stage.shell()}")
      continue
    log = root / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    echo(f"{head}: running (log {log})\n  {stage.shell()}")
    start = time.monotonic()
    with log.open("a") as out:
      argv = list(stage.command)
      if argv[0] == PYTHON:
        argv[0] = sys.executable
      code = subprocess.call(argv, cwd=REPO_ROOT, stdout=out,
                             stderr=subprocess.STDOUT,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seconds = time.monotonic() - start
    if code != 0 or not stage.done():
      raise StageFailed(
          f"Stage {stage.name} failed (exit {code}) after {seconds:.0f} s;"
          f" see {log}. Rerun to retry it: finished stages are skipped and"
          " an interrupted training resumes from its last checkpoint.")
    _record(root, stage, seconds)
    echo(f"{head}: finished in {seconds / 60:.1f} min")
