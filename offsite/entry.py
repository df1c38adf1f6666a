"""The `offsite` command's entry point.

Loading a command allocates only long-lived objects (modules, classes, pydantic models), yet
the cyclic garbage collector walks them again and again while they load and once more at exit:
about a fifth of a client command's run (`offsite backup --wait`). So the collector is off
while the command loads; offsite.cli.main.settle() then freezes what was loaded out of its view
(gc.freeze) and turns it back on before the command does its work."""
from __future__ import annotations

import gc


def main() -> int:
    gc.disable()
    from offsite.cli.main import main as run_command_line
    return run_command_line()
