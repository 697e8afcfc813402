"""`proto2prod settings`: every setting, its variable, default, bounds and value here."""

from __future__ import annotations

import os

import typer

from proto2prod.cli.output import JsonOption, console, print_json


def settings(
    markdown: bool = typer.Option(False, "--markdown", help="The README's table, as Markdown."),
    as_json: JsonOption = False,
) -> None:
    """List the environment variables proto2prod reads, with defaults and what is set now."""
    from proto2prod.setting import declarations, table
    from proto2prod.settings import PrototypeSettings, ServiceSettings, Settings

    classes = (Settings, ServiceSettings, PrototypeSettings)
    if markdown:
        print(table(*classes))
        return
    rows = [
        {
            "variable": declared.env,
            "default": None if field.default == "" else field.default,
            "set": _shown(os.environ.get(declared.env), declared.secret),
            "help": declared.help,
        }
        for cls in classes
        for field, _, declared in declarations(cls)
        if declared.env is not None
    ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        now = f" = {row['set']}" if row["set"] is not None else ""
        console.print(f"[bold]{row['variable']}[/]{now}  [dim](default {row['default']})[/]")
        console.print(f"    {row['help']}", highlight=False)


def _shown(value: str | None, secret: bool) -> str | None:
    return "(set, not shown)" if secret and value else value
