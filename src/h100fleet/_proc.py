"""Running external commands with errors that say what failed."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence


class CommandError(RuntimeError):
    """An external command exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(f"`{shlex.join(argv)}` exited {returncode}" + (f":\n{tail}" if tail else ""))
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    capture: bool = True,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run argv; raise CommandError with the command's last output lines when it fails."""
    proc = subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        input=input_bytes.decode() if input_bytes is not None else None,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout or "")
    return proc
