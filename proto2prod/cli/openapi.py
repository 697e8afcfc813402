"""`proto2prod openapi REF`: the service's OpenAPI document, without starting a service.

A web app's build generates its client from it (`openapi-typescript`, `openapi-generator`):
the document a service of REF serves at `/openapi.json`, byte for byte the same JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proto2prod.cli.output import user_errors

if TYPE_CHECKING:
    from proto2prod.definition import Definition


def openapi(
    model: Annotated[
        str,
        typer.Argument(
            help="NAME@ALIAS (the registry's definition for it), or a definition: FILE.py or "
            "module:Class."
        ),
    ],
    definition: Annotated[
        str | None,
        typer.Option(help="The definition, where the registry records none (as serve's)."),
    ] = None,
    server: Annotated[str | None, typer.Option(help="A base URL to list under `servers`.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write it to this file instead of printing it.")
    ] = None,
) -> None:
    """Print the OpenAPI 3.1 document of a service of MODEL (JSON)."""
    import json

    with user_errors():
        from proto2prod.service.openapi import document

        found = _definition(model, definition)
        text = json.dumps(document(found.model, server=server), indent=2) + "\n"
        if out is None:
            print(text, end="")
            return
        out.write_text(text)


def _definition(model: str, definition: str | None) -> Definition:
    """A definition given as such, else the one the registry records for the reference."""
    import dataclasses
    import os

    from proto2prod.definition import load_definition
    from proto2prod.registry import ModelRef, Registry
    from proto2prod.service.runtime import find_definition
    from proto2prod.settings import ServiceSettings, Settings

    if model.endswith(".py") or ":" in model or Path(model).is_file():
        return load_definition(model)
    ref = ModelRef.parse(model)
    config = dataclasses.replace(
        ServiceSettings.from_env({**os.environ, "PROTO2PROD_MODEL": model}),
        definition=definition or os.environ.get("PROTO2PROD_DEFINITION") or None,
    )
    return find_definition(config, Registry(Settings.from_env()), ref)
