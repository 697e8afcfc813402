"""The service's plain Starlette routes beside `/predict`: `GET /metadata`, the admin
token's `POST /admin/reload` and MLflow's signed `POST /admin/registry-events`."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from proto2prod.errors import (
    AdminDisabled,
    CacheUnavailable,
    NotReady,
    Refused,
    RegistryUnavailable,
    Unauthorized,
)
from proto2prod.service import webhooks
from proto2prod.service.http import error_response
from proto2prod.service.keys import KeyStore

log = logging.getLogger("proto2prod.service")


class Served(Protocol):
    """What the routes need of the running service."""

    runtime: Any
    rollout: Any
    server: dict[str, str]

    def runtimes(self) -> dict[str, Any]: ...

    def drift_report(self) -> dict[str, Any]: ...

    async def check_now(self, alias: str) -> None: ...

    async def reload(self) -> dict[str, Any]: ...


def routes(
    service: Callable[[], Served | None],
    admin_token: str | None,
    webhook_secret: str | None,
    keys: KeyStore,
) -> Starlette:
    """`service()` is the running service once BentoML has made it (None before). With API
    keys configured, `/metadata` needs a key and `/admin/reload` an admin key (or the admin
    token); the webhook receiver is authenticated by its signature instead."""
    seen = webhooks.SeenDeliveries()
    checks: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)

    async def metadata(request: Request) -> JSONResponse:
        try:
            keys.check(request.headers.get("authorization"), "predict")
        except Refused as refused:
            return error_response(refused)
        current = service()
        if current is None:
            return error_response(NotReady("the service is starting"))
        rollout = current.rollout.metadata() if current.rollout is not None else None
        found = current.runtime.metadata()
        return JSONResponse(
            {**found, "rollout": rollout, "drift": current.drift_report(), "server": current.server}
        )

    async def registry_event(request: Request) -> JSONResponse:
        """An MLflow webhook delivery: verified, then the poll's check for the alias, now.

        Answered before the check runs (202): MLflow waits for the answer with a timeout
        and retries on errors; the check (download, verify, warm-up) may take longer.
        """
        if webhook_secret is None:
            return error_response(
                AdminDisabled(
                    "set PROTO2PROD_WEBHOOK_SECRET (the secret given to proto2prod webhook "
                    "create) to receive registry events"
                )
            )
        body = await request.body()
        try:
            delivery = webhooks.verify(request.headers, body, webhook_secret)
            event = webhooks.parse(delivery, body)
        except Refused as refused:
            log.warning("refused a registry event: %s", refused)
            return error_response(refused)
        current = service()
        if event is None:
            return JSONResponse({"accepted": False, "reason": "not an alias event"})
        if not seen.first_time(delivery):
            return JSONResponse({"accepted": False, "reason": f"delivery {delivery} seen"})
        if current is None:
            return error_response(NotReady("the service is starting; the poll will catch up"))
        runtime = current.runtimes().get(event.alias)
        if runtime is None or event.name != runtime.ref.name:
            return JSONResponse(
                {
                    "accepted": False,
                    "reason": (
                        f"{event.name}@{event.alias} is not followed here "
                        f"({', '.join(str(r.ref) for r in current.runtimes().values())})"
                    ),
                }
            )
        log.info(
            "registry event %s: %s@%s -> %s; checking now",
            event.event,
            event.name,
            event.alias,
            event.version,
        )
        task = asyncio.create_task(current.check_now(event.alias))
        checks.add(task)
        task.add_done_callback(checks.discard)
        return JSONResponse({"accepted": True, "checking": str(runtime.ref)}, status_code=202)

    async def admin_reload(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest either way: how long the check takes says nothing about the token
        token_ok = (
            admin_token is not None
            and scheme.lower() == "bearer"  # RFC 7235: the scheme is case-insensitive
            and hmac.compare_digest(given.strip().encode(), admin_token.encode())
        )
        if not token_ok:
            if admin_token is None and not keys.enabled:
                return error_response(
                    AdminDisabled(
                        "set PROTO2PROD_ADMIN_TOKEN, or create an admin key (proto2prod keys "
                        "create NAME --scope admin), to enable /admin/reload"
                    )
                )
            if not keys.enabled:
                return error_response(Unauthorized("send Authorization: Bearer <admin token>"))
            try:
                keys.check(header, "admin")
            except Refused as refused:
                return error_response(refused)
        current = service()
        if current is None:
            return error_response(NotReady("the service is starting"))
        try:
            result = await current.reload()
        except (RegistryUnavailable, CacheUnavailable) as exc:
            return error_response(exc)
        return JSONResponse(result)

    async def docs(request: Request) -> RedirectResponse:
        """BentoML's Swagger UI is at `/`; `/docs` is where people look for it."""
        return RedirectResponse("/", status_code=307)

    return Starlette(
        routes=[
            Route("/docs", docs, methods=["GET"]),
            Route("/metadata", metadata, methods=["GET"]),
            Route("/admin/reload", admin_reload, methods=["POST"]),
            Route("/admin/registry-events", registry_event, methods=["POST"]),
        ]
    )
