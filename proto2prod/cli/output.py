"""What the CLI shows a person: one-line errors with their exit codes, and a training bar."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from proto2prod.errors import CacheUnavailable, Proto2ProdError

if TYPE_CHECKING:
    from proto2prod.registry import Registry

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON (one document on stdout) instead of text.")
]
"""`--json`, the same on every command that lists or reports."""


def print_json(found: object) -> None:
    """`found` as the command's one JSON document on stdout."""
    import json

    print(json.dumps(found, indent=2, default=str))


def open_registry() -> Registry:
    """The registry the environment names (`PROTO2PROD_HOME`, `MLFLOW_TRACKING_URI`)."""
    from proto2prod.registry import Registry
    from proto2prod.settings import Settings

    return Registry(Settings.from_env())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except Proto2ProdError as exc:  # what a person can act on: one line, its exit code
        say(exc)
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        say(full)
        raise typer.Exit(full.exit_code) from None


def say(exc: Proto2ProdError) -> None:
    # emoji=False: "module:Class: ..." must not become "module😪 ..." (":Sleepy:")
    err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, emoji=False)


def disk_full(exc: BaseException) -> CacheUnavailable | None:
    """A full (or read-only) disk anywhere in `exc`'s chain, as the one-line error it is
    (exit 75: free space and retry): an OSError's errno, or SQLite's own code (SQLITE_FULL,
    wrapped by SQLAlchemy inside MLflow)."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return None
        code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            where = f" ({seen.filename})" if seen.filename else ""
            return CacheUnavailable(
                f"the disk is full or read-only{where}: {seen.strerror}; free space and run "
                f"the command again"
            )
        if code in (13, 8):  # SQLITE_FULL, SQLITE_READONLY
            return CacheUnavailable(
                "the registry's SQLite database cannot be written (disk full or read-only); "
                "free space and run the command again"
            )
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "orig", None)
    return None


class BarProgress:
    """`proto2prod.Progress` drawn as a rich progress bar with the latest loss."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self._task: Any = None

    def __enter__(self) -> BarProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, total: int, description: str = "training") -> None:
        self._task = self._bar.add_task(description, total=total, metrics="")

    def advance(self, steps: int = 1, **metrics: float) -> None:
        if self._task is None:
            self.start(0)
        text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        self._bar.update(self._task, advance=steps, metrics=text)
