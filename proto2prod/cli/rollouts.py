"""Rollout commands: `webhook create/list/delete` (MLflow pushes alias moves to services)
and `compare` (the shadow and canary comparisons services logged to MLflow)."""

from __future__ import annotations

import os
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

from proto2prod.cli.output import JsonOption, console, open_registry, print_json, user_errors
from proto2prod.errors import InvalidArgument, SettingsError

webhook = typer.Typer(
    name="webhook",
    help="MLflow webhooks that tell services at once when an alias moves (a tracking server "
    "is needed: MLFLOW_TRACKING_URI).",
    no_args_is_help=True,
)

RECEIVER = "/admin/registry-events"


def _registry_with_server() -> Any:
    registry = open_registry()
    if registry.settings.embedded:
        raise SettingsError(
            "webhooks are delivered by an MLflow tracking server; the embedded registry has "
            "none: start `mlflow server` and set MLFLOW_TRACKING_URI (the services keep "
            "polling the embedded registry meanwhile)"
        )
    return registry


def receiver_url(url: str) -> str:
    """The service's receiver: a bare service URL gets `/admin/registry-events`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(
            f"--url {url!r}: give the service's URL, e.g. http://127.0.0.1:3000 (the path "
            f"{RECEIVER} is added when it has none)"
        )
    path = parts.path if parts.path not in ("", "/") else RECEIVER
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


@webhook.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the webhook, e.g. digits-production.")],
    url: Annotated[str, typer.Option(help="The service's URL, e.g. http://10.0.0.5:3000.")],
    as_json: JsonOption = False,
) -> None:
    """Deliver alias moves (set, moved, deleted) to a service, signed with
    PROTO2PROD_WEBHOOK_SECRET (the service must have the same secret)."""
    with user_errors():
        from proto2prod.service.webhooks import ALIAS_EVENTS

        secret = os.environ.get("PROTO2PROD_WEBHOOK_SECRET", "")
        if len(secret) < 16:
            raise SettingsError(
                "set PROTO2PROD_WEBHOOK_SECRET to a secret of 16 or more characters (the "
                "service verifies each delivery with it), e.g. from: openssl rand -hex 32"
            )
        target = receiver_url(url)
        registry = _registry_with_server()
        with registry.errors(f"creating webhook {name}"):
            created = registry.client.create_webhook(
                name=name,
                url=target,
                events=list(ALIAS_EVENTS),
                description="proto2prod: alias moves for a model service",
                secret=secret,
            )
    if as_json:
        print_json({"id": created.webhook_id, "name": name, "url": target})
        return
    console.print(f"webhook {created.webhook_id} ({name}) -> {target}", highlight=False)


@webhook.command("list")
def list_(
    as_json: JsonOption = False,
) -> None:
    """The tracking server's webhooks."""

    from rich.table import Table

    with user_errors():
        registry = _registry_with_server()
        with registry.errors("listing webhooks"):
            found = [
                {
                    "id": hook.webhook_id,
                    "name": hook.name,
                    "url": hook.url,
                    "events": [str(e) for e in hook.events],
                    "status": str(hook.status),
                }
                for hook in registry.client.list_webhooks()
            ]
    if as_json:
        print_json(found)
        return
    table = Table(title=f"{len(found)} webhooks")
    for column in ("id", "name", "url", "events", "status"):
        table.add_column(column, overflow="fold")
    for hook in found:
        table.add_row(
            hook["id"], hook["name"], hook["url"], "\n".join(hook["events"]), hook["status"]
        )
    console.print(table)


@webhook.command("delete")
def delete(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id (webhook list).")],
) -> None:
    """Stop deliveries to a service (it goes on polling)."""
    with user_errors():
        registry = _registry_with_server()
        with registry.errors(
            f"deleting webhook {webhook_id}",
            not_found=f"no webhook {webhook_id}; list them with: proto2prod webhook list",
        ):
            registry.client.delete_webhook(webhook_id)
    console.print(f"deleted webhook {webhook_id}")


def compare(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. digits.")],
    as_json: JsonOption = False,
    all_kinds: Annotated[
        bool, typer.Option("--all", help="With --json: the drift runs too.")
    ] = False,
) -> None:
    """The shadow and canary comparisons services logged for NAME, newest first."""

    from rich.table import Table

    with user_errors():
        from proto2prod.registry.rollouts import comparisons

        kinds = ("shadow", "canary", "drift") if all_kinds and as_json else ("shadow", "canary")
        found = comparisons(open_registry(), name, kinds=kinds)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print(f"no shadow or canary has run for {name} (proto2prod serve --shadow ...)")
        return
    table = Table(title=f"{name}: champion against challenger")
    for column in (
        "started",
        "kind",
        "versions",
        "compared",
        "agreement",
        "mean |Δ|",
        "ms/item",
        "outcome",
    ):
        table.add_column(column)
    for run in found:
        table.add_row(*_row(run))
    console.print(table)


def _row(run: dict[str, Any]) -> list[str]:
    m = run["metrics"]

    def num(key: str, fmt: str = "{:.0f}") -> str:
        return fmt.format(m[key]) if key in m else "-"

    versions = f"v{run['champion']} vs v{run['challenger']}"
    if run["kind"] == "shadow":
        times = f"{num('shadow_champion_ms_per_item', '{:.2f}')} / "
        times += num("shadow_challenger_ms_per_item", "{:.2f}")
        outcome = f"{num('shadow_dropped')} dropped, {num('shadow_failed')} failed"
        return [
            run["started"],
            "shadow",
            versions,
            num("shadow_compared"),
            num("shadow_agreement", "{:.1%}"),
            num("shadow_mean_abs_delta", "{:.4f}"),
            times,
            outcome,
        ]
    answered = f"{num('champion_answered')} / {num('canary_answered')}"
    outcome = (
        f"rolled back: {run['rolled_back']}"
        if run["rolled_back"]
        else (f"running at {num('canary_percent', '{:g}')} %")
    )
    p99 = f"p99 {num('champion_p99_ms', '{:.1f}')} / {num('canary_p99_ms', '{:.1f}')} ms"
    return [run["started"], "canary", versions, answered, "-", "-", p99, outcome]
