"""The service's plain Starlette routes beside `/predict`: `GET /metadata`, the admin
token's `POST /admin/reload`, MLflow's signed `POST /admin/registry-events` and the peer
replicas' signed `POST /admin/peer-events` (service/peers.py)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Coroutine
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
from proto2prod.service import peers, webhooks
from proto2prod.service.http import error_response
from proto2prod.service.keys import KeyStore

log = logging.getLogger("proto2prod.service")


class Served(Protocol):
    """What the routes need of the running service."""

    runtime: Any
    rollout: Any
    peers: Any
    server: dict[str, str]

    def runtimes(self) -> dict[str, Any]: ...

    def drift_report(self) -> dict[str, Any]: ...

    async def check_now(self, alias: str) -> None: ...

    async def reload(self) -> dict[str, Any]: ...

    async def on_peer(self, event: dict[str, Any]) -> None: ...


def routes(
    service: Callable[[], Served | None],
    admin_token: str | None,
    webhook_secret: str | None,
    keys: KeyStore,
) -> Starlette:
    """`service()` is the running service once BentoML has made it (None before). With API
    keys configured, `/metadata` needs a key and `/admin/reload` an admin key (or the admin
    token); the webhook receiver is authenticated by its signature instead."""
    handlers = Routes(service, admin_token, webhook_secret, keys)
    return Starlette(
        routes=[
            Route("/docs", handlers.docs, methods=["GET"]),
            Route("/metadata", handlers.metadata, methods=["GET"]),
            Route("/admin/reload", handlers.admin_reload, methods=["POST"]),
            Route("/admin/registry-events", handlers.registry_event, methods=["POST"]),
            Route(peers.PATH, handlers.peer_event, methods=["POST"]),
        ]
    )


class Routes:
    """The handlers, with what they share: the service, the secrets and the deliveries seen."""

    def __init__(
        self,
        service: Callable[[], Served | None],
        admin_token: str | None,
        webhook_secret: str | None,
        keys: KeyStore,
    ) -> None:
        self.service = service
        self.admin_token = admin_token
        self.webhook_secret = webhook_secret
        self.keys = keys
        self.seen = webhooks.SeenDeliveries()
        self.checks: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)

    async def metadata(self, request: Request) -> JSONResponse:
        try:
            self.keys.check(request.headers.get("authorization"), "predict")
        except Refused as refused:
            return error_response(refused)
        current = self.service()
        if current is None:
            return error_response(NotReady("the service is starting"))
        rollout = current.rollout.metadata() if current.rollout is not None else None
        found = current.runtime.metadata()
        fleet = current.peers.metadata() if current.peers is not None else None
        return JSONResponse(
            {
                **found,
                "rollout": rollout,
                "drift": current.drift_report(),
                "peers": fleet,
                "server": current.server,
            }
        )

    async def registry_event(self, request: Request) -> JSONResponse:
        """An MLflow webhook delivery: verified, then the poll's check for the alias, now.

        Answered before the check runs (202): MLflow waits for the answer with a timeout
        and retries on errors; the check (download, verify, warm-up) may take longer.
        """
        if self.webhook_secret is None:
            return error_response(
                AdminDisabled(
                    "set PROTO2PROD_WEBHOOK_SECRET (the secret given to proto2prod webhook "
                    "create) to receive registry events"
                )
            )
        body = await request.body()
        try:
            delivery = webhooks.verify(request.headers, body, self.webhook_secret)
            event = webhooks.parse(delivery, body)
        except Refused as refused:
            log.warning("refused a registry event: %s", refused)
            return error_response(refused)
        current = self.service()
        if event is None:
            return JSONResponse({"accepted": False, "reason": "not an alias event"})
        if not self.seen.first_time(delivery):
            return JSONResponse({"accepted": False, "reason": f"delivery {delivery} seen"})
        if current is None:
            return error_response(NotReady("the service is starting; the poll will catch up"))
        return self._act_on(current, event)

    def _act_on(self, current: Served, event: webhooks.AliasEvent) -> JSONResponse:
        runtime = current.runtimes().get(event.alias)
        if runtime is None or event.name != runtime.ref.name:
            followed = ", ".join(str(r.ref) for r in current.runtimes().values())
            reason = f"{event.name}@{event.alias} is not followed here ({followed})"
            return JSONResponse({"accepted": False, "reason": reason})
        log.info(
            "registry event %s: %s@%s -> %s; checking now",
            event.event,
            event.name,
            event.alias,
            event.version,
        )
        self._in_task(current.check_now(event.alias))
        return JSONResponse({"accepted": True, "checking": str(runtime.ref)}, status_code=202)

    def _in_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.checks.add(task)
        task.add_done_callback(self.checks.discard)

    async def peer_event(self, request: Request) -> JSONResponse:
        """Another replica's event, verified like a webhook delivery; acted on after the
        202, as a webhook is."""
        current = self.service()
        if current is None:
            return error_response(NotReady("the service is starting; the poll will catch up"))
        if current.peers is None:
            return error_response(
                AdminDisabled(
                    "set PROTO2PROD_PEERS (and PROTO2PROD_WEBHOOK_SECRET) to take "
                    "events from peer replicas"
                )
            )
        body = await request.body()
        try:
            event = current.peers.receive(request.headers, body)
        except Refused as refused:
            log.warning("refused a peer event: %s", refused)
            return error_response(refused)
        if event is None:
            return JSONResponse({"accepted": False, "reason": "our own event, or one seen"})
        log.info("peer %s: %s", event.get("origin"), event.get("kind"))
        self._in_task(current.on_peer(event))
        return JSONResponse({"accepted": True}, status_code=202)

    async def admin_reload(self, request: Request) -> JSONResponse:
        refused = self._admin_refusal(request.headers.get("authorization", ""))
        if refused is not None:
            return error_response(refused)
        current = self.service()
        if current is None:
            return error_response(NotReady("the service is starting"))
        try:
            result = await current.reload()
        except (RegistryUnavailable, CacheUnavailable) as exc:
            return error_response(exc)
        return JSONResponse(result)

    def _admin_refusal(self, header: str) -> Refused | None:
        """Why `header` may not reload (None: it may): the admin token, else an admin key."""
        scheme, _, given = header.partition(" ")
        # compare_digest either way: how long the check takes says nothing about the token
        token_ok = (
            self.admin_token is not None
            and scheme.lower() == "bearer"  # RFC 7235: the scheme is case-insensitive
            and hmac.compare_digest(given.strip().encode(), self.admin_token.encode())
        )
        if token_ok:
            return None
        if self.admin_token is None and not self.keys.enabled:
            return AdminDisabled(
                "set PROTO2PROD_ADMIN_TOKEN, or create an admin key (proto2prod keys "
                "create NAME --scope admin), to enable /admin/reload"
            )
        if not self.keys.enabled:
            return Unauthorized("send Authorization: Bearer <admin token>")
        try:
            self.keys.check(header, "admin")
        except Refused as refused:
            return refused
        return None

    async def docs(self, request: Request) -> RedirectResponse:
        """BentoML's Swagger UI is at `/`; `/docs` is where people look for it."""
        return RedirectResponse("/", status_code=307)
