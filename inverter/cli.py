"""What every command line of the project shares.

  from inverter import cli
  if __name__ == "__main__":
    cli.run(main)      # instead of absl's app.run(main)

One error path: a `UserError` (or a missing file) raised anywhere prints
`ERROR: <message>` without a traceback and exits with status 2; a flag that
cannot be parsed does the same, naming the flag; a run stopped by SIGTERM or
Ctrl-C after saving exits with 128 + the signal number, as a shell reports a
process the signal ended. Anything else is a bug and keeps its traceback.

Config overrides of tuple fields also take a plain comma-separated list, the
form people type: `--config.inverters=/runs/conv1,/runs/fc6` is
`('/runs/conv1', '/runs/fc6')`, as is the Python form
`--config.inverters="('/runs/conv1', '/runs/fc6')"`.
"""

from __future__ import annotations

import ast
import logging as logging_std
import sys
from typing import Any, Callable, Sequence

from absl import app, flags, logging
from ml_collections.config_flags import config_flags, tuple_parser

from inverter import errors, preemption

# Exit statuses: a user's mistake (as for a command-line usage error).
EXIT_USER_ERROR = 2


class ListParser(tuple_parser.TupleParser):
  """Parses a tuple override from a Python literal or a comma-separated list.

  ml_collections reads `'/a,/b'` as Python source and fails on it; here any
  value that is not a parenthesised or bracketed literal is split at its
  commas instead, each item kept as a string unless it is a number.
  """

  def parse(self, argument: Any) -> tuple:
    if not isinstance(argument, str):
      return super().parse(argument)
    text = argument.strip()
    if text.startswith(("(", "[")):
      try:
        value = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        raise ValueError(
            f"cannot read {argument!r} as a list. Write a comma-separated"
            " list, a,b,c, or a Python tuple with each string quoted,"
            " \"('a', 'b')\".") from None
      return tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return tuple(_literal_or_string(item.strip())
                 for item in text.split(",") if item.strip())


def _literal_or_string(item: str) -> Any:
  """'0.5' -> 0.5, 'True' -> True, "'a'" -> 'a'; anything else as it is."""
  try:
    value = ast.literal_eval(item)
  except (ValueError, SyntaxError):
    return item
  return value if isinstance(value, (int, float, bool, str)) else item


config_flags.register_flag_parser_for_type(tuple, ListParser())


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flags parser, but a bad flag is one `ERROR:` line and status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e).replace("\n", "\n  ")
    print(f"ERROR: {message}\n(--helpfull lists every flag.)",
          file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


class QuietLibraries(logging_std.Filter):
  """Drops Orbax's routine records (several per saved or restored
  checkpoint, and a warning that checkpoints are opened read-only, as
  intended), which would bury the progress lines; other warnings pass."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    if "/orbax/" not in record.pathname:
      return True
    return (record.levelno >= logging_std.WARNING
            and "read only" not in record.getMessage())


def hide_accelerators_from_tensorflow() -> None:
  """tf.data only: keep TensorFlow off the GPUs that JAX owns."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")


def exit_on_user_error(main: Callable[[list[str]], Any]
                       ) -> Callable[[list[str]], Any]:
  """`main`, with the project's one mapping from errors to exit statuses."""

  def guarded(argv: list[str]) -> Any:
    logging.get_absl_handler().addFilter(QuietLibraries())
    try:
      return main(argv)
    except preemption.Interrupted as e:
      print(f"\n{e}", file=sys.stderr)
      sys.exit(128 + e.signum)
    except (errors.UserError, FileNotFoundError) as e:
      print(f"\nERROR: {e}", file=sys.stderr)
      sys.exit(EXIT_USER_ERROR)

  return guarded


def run(main: Callable[[list[str]], Any]) -> None:
  """absl's `app.run(main)` with the shared flag parsing and error path."""
  app.run(exit_on_user_error(main), flags_parser=parse_flags)
