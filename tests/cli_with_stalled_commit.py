"""`python -m inverter.main`, except that committing one checkpoint stalls.

For the hard-kill test: `python tests/cli_with_stalled_commit.py STEP MARKER
<inverter.main flags>` runs the real command line, but when Orbax has
written every file of checkpoint STEP into its temporary directory and is
about to commit it (rename), it creates the file MARKER and waits forever,
so that the test can SIGKILL the process at exactly that moment.
"""

import asyncio
import pathlib
import runpy
import sys

from orbax.checkpoint._src.path import atomicity

stall_step, marker = sys.argv[1], pathlib.Path(sys.argv[2])
commit = atomicity.AtomicRenameTemporaryPath.finalize


async def stalled_commit(self, *args, **kwargs):
  if self._final_path.name == stall_step:  # pylint: disable=protected-access
    marker.write_text(str(self.get()))
    while True:
      await asyncio.sleep(60)
  return await commit(self, *args, **kwargs)


atomicity.AtomicRenameTemporaryPath.finalize = stalled_commit
sys.argv = ["inverter.main", *sys.argv[3:]]
runpy.run_module("inverter.main", run_name="__main__")
