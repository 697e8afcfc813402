"""`proto2prod keys create/list/revoke`: the service's API keys (service/keys.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from proto2prod.cli.output import JsonOption, console, err_console, print_json, user_errors

if TYPE_CHECKING:
    from proto2prod.service.keys import KeyStore

keys = typer.Typer(
    name="keys",
    help="API keys for the service: with any key in the keys file, /predict needs one.",
    no_args_is_help=True,
)


def _store() -> KeyStore:
    from proto2prod.service.keys import KeyStore
    from proto2prod.settings import Settings

    return KeyStore(Settings.from_env().keys_file)


@keys.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for, e.g. web-frontend.")],
    scope: Annotated[
        str, typer.Option(help="predict (/predict, /metadata) or admin (also /admin/*).")
    ] = "predict",
    as_json: JsonOption = False,
) -> None:
    """Make a key; it is printed once (only a salted hash is kept)."""
    with user_errors():
        store = _store()
        key = store.create(name, scope)
    if as_json:
        print_json({"name": name, "scope": scope, "key": key, "file": str(store.path)})
        return
    err_console.print(f"key {name!r} ({scope}) stored in {store.path}; it is shown only now:")
    print(key)


@keys.command("list")
def list_(
    as_json: JsonOption = False,
) -> None:
    """The keys (names, scopes, dates; never the keys)."""

    from rich.table import Table

    from proto2prod.service.keys import summary

    with user_errors():
        store = _store()
        found = [summary(r) for r in store.records()]
    if as_json:
        print_json(found)
        return
    table = Table(title=f"{len(found)} keys in {store.path}")
    for column in ("name", "id", "scope", "created"):
        table.add_column(column)
    for row in found:
        table.add_row(row["name"], row["id"], row["scope"], row["created"])
    console.print(table)


@keys.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Remove a key; running services refuse it within a second."""
    with user_errors():
        store = _store()
        store.revoke(name)
    console.print(f"revoked {name!r}")
