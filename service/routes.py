"""The service's plain Starlette routes beside `/predict`: `GET /metadata` and the admin
token's `POST /admin/reload`."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proto2prod.errors import (
    AdminDisabled,
    CacheUnavailable,
    NotReady,
    RegistryUnavailable,
    Unauthorized,
)
from proto2prod.service.http import error_response


class Served(Protocol):
    """What the routes need of the running service."""

    runtime: Any
    server: dict[str, str]


def routes(service: Callable[[], Served | None], admin_token: str | None) -> Starlette:
    """`service()` is the running service once BentoML has made it (None before)."""

    async def metadata(_: Request) -> JSONResponse:
        current = service()
        if current is None:
            return error_response(NotReady("the service is starting"))
        return JSONResponse({**current.runtime.metadata(), "server": current.server})

    async def admin_reload(request: Request) -> JSONResponse:
        if admin_token is None:
            return error_response(
                AdminDisabled("set PROTO2PROD_ADMIN_TOKEN to enable /admin/reload")
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest either way: how long the check takes says nothing about the token
        if not hmac.compare_digest(given.strip().encode(), admin_token.encode()) or (
            scheme != "Bearer"
        ):
            return error_response(Unauthorized("send Authorization: Bearer <admin token>"))
        current = service()
        if current is None:
            return error_response(NotReady("the service is starting"))
        try:
            result = await asyncio.to_thread(current.runtime.check, retry_refused=True)
        except (RegistryUnavailable, CacheUnavailable) as exc:
            return error_response(exc)
        return JSONResponse(result)

    return Starlette(
        routes=[
            Route("/metadata", metadata, methods=["GET"]),
            Route("/admin/reload", admin_reload, methods=["POST"]),
        ]
    )
