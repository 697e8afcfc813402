"""The registry's commands: train, register, versions, promote, rollback."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proto2prod.cli.output import (
    BarProgress,
    JsonOption,
    console,
    err_console,
    open_registry,
    print_json,
    user_errors,
)
from proto2prod.errors import InvalidArgument

if TYPE_CHECKING:
    from proto2prod.definition import Definition
    from proto2prod.model import Trained
    from proto2prod.registry import Published


AliasOption = Annotated[
    str, typer.Option("--alias", "-a", help="Alias to move (e.g. production, staging).")
]


def train(
    model_file: Annotated[
        str,
        typer.Argument(help="A model definition: FILE.py, FILE.py:Class or module:Class."),
    ],
    alias: Annotated[
        str | None, typer.Option("--alias", "-a", help="Point this alias at the new version.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="A short training run (for smoke tests).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Train a model definition, publish it to the registry and register a new version."""
    with user_errors():
        from proto2prod.definition import load_definition
        from proto2prod.errors import DefinitionError
        from proto2prod.registry import check_alias, publish

        if alias is not None:
            check_alias(alias)
        registry = open_registry()
        definition = load_definition(model_file)
        if not definition.model.has_train:
            raise DefinitionError(
                f"{definition.entry} has no train(); register weights trained elsewhere "
                f"with: proto2prod register {model_file} --weights PATH"
            )
        with BarProgress() as progress:
            trained = _train(definition, progress, quick)
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in trained.metrics.items())
        (err_console if as_json else console).print(
            f"trained [bold]{definition.model.name}[/]: {metrics}"
        )
        published = publish(
            registry, definition, trained, alias=alias, source_path=Path(model_file.split(":")[0])
        )
    _say_registered(published, trained.metrics, as_json)


def register(
    model_file: Annotated[
        str,
        typer.Argument(help="The model definition: FILE.py, FILE.py:Class or module:Class."),
    ],
    weights: Annotated[
        Path,
        typer.Option(
            "--weights",
            "-w",
            help="Weights trained elsewhere: .safetensors, or a PyTorch state dict "
            "(.pt, .pth, .bin; read with weights_only=True and converted).",
        ),
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="NAME=NUMBER, a held-out metric (repeatable)."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=VALUE, a training parameter (repeatable)."),
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", "-a", help="Point this alias at the new version.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Register weights trained elsewhere (a notebook, a cluster, a checkpoint) as a version.

    Nothing is written to the registry until the weights load strictly into network() and
    every example gives an output that fits the definition's fields.
    """
    with user_errors():
        from proto2prod.definition import load_definition
        from proto2prod.model import Trained
        from proto2prod.registry import check_alias, publish
        from proto2prod.registry.publish import sha256_file
        from proto2prod.weights import read_weights

        if alias is not None:
            check_alias(alias)
        metrics = {
            key: _number("--metric", key, value) for key, value in _pairs("--metric", metric)
        }
        params = dict(_pairs("--param", param))
        definition = load_definition(model_file)
        state = read_weights(weights)
        origin = {"by": "register", "file": weights.name, "sha256": sha256_file(weights)}
        published = publish(
            open_registry(),
            definition,
            Trained(weights=state, metrics=metrics, params=params),
            alias=alias,
            source_path=Path(model_file.split(":")[0]),
            origin=origin,
        )
    _say_registered(published, metrics, as_json)


def _train(definition: Definition, progress: BarProgress, quick: bool) -> Trained:
    """The user's `train()`, whose failures are theirs to fix: one line naming it."""
    from proto2prod.errors import DefinitionError, Proto2ProdError
    from proto2prod.model import Trained

    try:
        trained = definition.model.train(progress, quick=quick)
    except Proto2ProdError:
        raise  # ours already says what to do, with its own exit code
    except Exception as exc:  # the user's code: one line naming train(), exit 2, no traceback
        raise DefinitionError(
            f"train() raised {type(exc).__name__}: {exc}", where=definition.entry
        ) from exc
    if not isinstance(trained, Trained):
        raise DefinitionError(
            f"train() must return proto2prod.Trained(weights=..., metrics=...); it returned "
            f"{type(trained).__name__}",
            where=definition.entry,
        )
    return trained


def _pairs(option: str, given: list[str] | None) -> list[tuple[str, str]]:
    pairs = []
    for text in given or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(
                f"{option} {text!r}: write NAME=VALUE, e.g. {option} accuracy=0.97"
            )
        pairs.append((key.strip(), value.strip()))
    return pairs


def _number(option: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidArgument(f"{option} {key}={value!r}: the value must be a finite number")
    return number


def _say_registered(published: Published, metrics: dict[str, float], as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "name": published.name,
                "version": published.version,
                "alias": published.alias,
                "run_id": published.run_id,
                "uri": published.uri,
                "metrics": metrics,
            }
        )
        return
    tail = f" with alias [bold]@{published.alias}[/]" if published.alias else ""
    console.print(
        f"registered [bold]{published.name}[/] version [bold]{published.version}[/]{tail}: "
        f"{published.uri}"
    )


def versions(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. digits.")],
    as_json: JsonOption = False,
) -> None:
    """List the versions of a model with their aliases and metrics, newest first."""
    with user_errors():
        found = open_registry().versions(name)
    if as_json:
        print_json([v.to_json() for v in found])
        return
    from rich.table import Table

    table = Table(title=f"{name} ({len(found)} versions)")
    for column in ("version", "aliases", "metrics", "created", "run id"):
        table.add_column(column)
    for v in found:
        created = datetime.fromtimestamp(v.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            v.version,
            ", ".join(f"@{a}" for a in v.aliases),
            ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())),
            created,
            v.run_id[:12],
        )
    console.print(table)


def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number to point the alias at.")],
    alias: AliasOption = "production",
    as_json: JsonOption = False,
) -> None:
    """Point an alias at a version (services following the alias pick it up)."""
    with user_errors():
        previous = open_registry().promote(name, version, alias)
    if as_json:
        print_json({"name": name, "alias": alias, "version": str(version), "was": previous})
        return
    before = f" (was version {previous})" if previous and previous != str(version) else ""
    console.print(f"{name}@{alias} -> version {version}{before}")


def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: AliasOption = "production",
    as_json: JsonOption = False,
) -> None:
    """Move an alias back to the version it pointed at before the last promote."""
    with user_errors():
        current, previous = open_registry().rollback(name, alias)
    if as_json:
        print_json({"name": name, "alias": alias, "version": previous, "was": current})
        return
    console.print(f"{name}@{alias} -> version {previous} (rolled back from {current})")
