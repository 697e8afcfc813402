"""HTTP edges of the service that BentoML does not give: body limits and error bodies.

`BodyLimit`, a plain ASGI middleware: a body over the limit gets 413 before it is read
whole (from Content-Length, or while a chunked body streams in), and `/predict` only takes
JSON (415 otherwise: never a pickle content type). Admission (429 with `Retry-After`) is
`service/predict.py`'s, counted once a body has arrived.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_TYPES = (b"application/json",)


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
