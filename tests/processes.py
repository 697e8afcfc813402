"""Real server processes for tests, on the same helpers the demo and the benchmark use."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

from proto2prod.processes import free_port, kill, spawn, wait_http

__all__ = ["free_port", "server", "stop"]


def stop(proc: Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left."""
    kill(proc, grace)


@contextmanager
def server(
    args: Sequence[str],
    ready_url: str,
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 90,
    cwd: Path | None = None,
) -> Iterator[Popen[bytes]]:
    """Run `args` in its own process group until the block ends."""
    proc = spawn(list(args), log, env, cwd)
    try:
        wait_http(ready_url, proc, log, timeout)
        yield proc
    finally:
        stop(proc)
