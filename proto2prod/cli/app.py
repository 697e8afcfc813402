"""`proto2prod`: the command line. Each command lives in the module named after its job
(versions.py, rollouts.py, keys.py, drift.py, serving.py, prototype.py, bench.py,
demo.py, settings.py, deploy.py); this module assembles them.

Every command reads its settings from the environment (`PROTO2PROD_HOME`,
`MLFLOW_TRACKING_URI`) through `Settings`; a failure prints one line and exits with the
error's code (2 input, 3 not found, 75 retry). Heavy libraries are imported inside
commands only, so `--help` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from proto2prod.cli.bench import bench
from proto2prod.cli.demo import demo
from proto2prod.cli.deploy import deploy
from proto2prod.cli.drift import drift
from proto2prod.cli.keys import keys
from proto2prod.cli.openapi import openapi
from proto2prod.cli.output import user_errors
from proto2prod.cli.prototype import prototype
from proto2prod.cli.rollouts import compare, webhook
from proto2prod.cli.serving import build, serve
from proto2prod.cli.settings import settings
from proto2prod.cli.versions import promote, register, rollback, train, versions

app = typer.Typer(
    name="proto2prod",
    help="From a Gradio prototype to a registry-fed model service, from one model definition.",
    no_args_is_help=True,
    # `proto2prod --install-completion` / `--show-completion` (bash, zsh, fish, PowerShell)
    add_completion=True,
    pretty_exceptions_enable=False,
)

for command in (
    train,
    register,
    versions,
    promote,
    rollback,
    compare,
    drift,
    serve,
    build,
    openapi,
    prototype,
    bench,
    demo,
    settings,
):
    app.command()(command)
app.add_typer(webhook)
app.add_typer(keys)
app.add_typer(deploy)


def _version(shown: bool) -> None:
    if shown:
        from proto2prod import __version__

        print(f"proto2prod {__version__}")
        raise typer.Exit()


@app.callback()
def _this_process(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """The CLI's process is ours: apply the registry settings to MLflow once, before any
    command (the library itself never writes the environment)."""
    from proto2prod.settings import Settings
    from proto2prod.startup import configure_process

    with user_errors():
        configure_process(Settings.from_env())


def main() -> None:
    """The console script. Whatever a command does, a full disk is one line and exit 75,
    also where it escapes a command's own error handling."""
    import sys

    from proto2prod.cli.output import disk_full, say

    try:
        app()
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        say(full)
        sys.exit(full.exit_code)
