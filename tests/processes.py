"""Real server processes for tests, on the same helpers the demo and the benchmark use."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

from proto2prod.processes import free_port, kill, spawn, wait_http

__all__ = ["free_port", "server", "stop"]


def mlflow_server_args(port: int, store: str, artifacts: Path) -> list[str]:
    """`mlflow server` on loopback `port`: one worker, `store` behind it (a SQLite or
    PostgreSQL URI), artifacts served from `artifacts`."""
    import sys

    mlflow = str(Path(sys.executable).parent / "mlflow")
    args = [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return [*args, "--backend-store-uri", store, "--artifacts-destination", str(artifacts)]


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
