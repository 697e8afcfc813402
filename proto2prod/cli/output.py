"""What the CLI shows a person: one-line errors with their exit codes, and a training bar."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from proto2prod.errors import Proto2ProdError

if TYPE_CHECKING:
    from proto2prod.registry import Registry

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


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
        # emoji=False: "module:Class: ..." must not become "module😪 ..." (":Sleepy:")
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, emoji=False)
        raise typer.Exit(exc.exit_code) from None


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
