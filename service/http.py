"""HTTP edges of the service that BentoML does not give: admission, body limits, errors.

Plain ASGI middlewares. `Admission` answers 429 with `Retry-After` once `max_concurrency`
requests are inside (BentoML's own `traffic.max_concurrency` answers 429 without it, so
clients could not tell when to come back), and 503 with `Retry-After` while the server
drains. `BodyLimit`: a body over the limit gets 413 before it is read whole (from
Content-Length, or while a chunked body streams in), and `/predict` only takes JSON (415
otherwise: never a pickle content type).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_TYPES = (b"application/json", b"")


def error_response(
    status: int, error: str, message: str, *, retry_after: int | None = None, **extra: Any
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": error, "message": message, **extra}, status, headers=headers)


async def _send_json(
    send: Send, status: int, body: dict[str, Any], *, retry_after: int | None = None
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Admission:
    """At most `max_concurrency` requests on `paths` at once; the rest get 429 at once.

    Health, metrics and metadata are not counted, so they answer under any load.
    """

    def __init__(self, app: ASGIApp, max_concurrency: int, paths: tuple[str, ...]) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.paths = paths
        self.inside = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.inside >= self.max_concurrency:
            await _send_json(send, 429, {
                "error": "TooManyRequests",
                "message": f"{self.inside} requests are being served, the limit is "
                f"{self.max_concurrency} (PROTO2PROD_MAX_CONCURRENCY); retry shortly",
            }, retry_after=1)  # fmt: skip
            return
        self.inside += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inside -= 1


class BodyLimit:
    """413 for bodies over `max_bytes`, 415 for non-JSON bodies on `json_paths`."""

    def __init__(self, app: ASGIApp, max_bytes: int, json_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.json_paths = json_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["path"] in self.json_paths and media not in JSON_TYPES:
            await _send_json(send, 415, {
                "error": "UnsupportedMediaType",
                "message": f"send JSON (Content-Type: application/json), not {media.decode()!r}",
            })  # fmt: skip
            return
        too_large = {
            "error": "PayloadTooLarge",
            "message": f"the request body is over the limit of {self.max_bytes} bytes "
            f"(PROTO2PROD_MAX_BODY_MB); send fewer or smaller items",
        }
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_json(send, 413, too_large)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await _send_json(send, 413, too_large)
