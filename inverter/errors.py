"""The one base class of mistakes a user can fix.

Every error that means "the configuration, a path or a file is wrong, and
here is how to fix it" derives from `UserError`. The command lines
(`inverter/cli.py`) print such an error's message alone, without a
traceback, and exit with status 2; anything else is a bug and keeps its
traceback. Imports nothing, so every layer may raise one.
"""


class UserError(Exception):
  """A mistake the user can fix; the message says what is wrong and how."""
