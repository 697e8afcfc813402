"""HTTP edges of the service that BentoML does not give: body limits and error bodies.

`BodyLimit`, a plain ASGI middleware: a body over the limit gets 413 before it is read
whole (from Content-Length, or while a chunked body streams in), and `/predict` only takes
JSON (415 otherwise: never a pickle content type). Admission (429 with `Retry-After`) is
`service/predict.py`'s, counted once a body has arrived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proto2prod.errors import (
    InvalidOutput,
    PayloadTooLarge,
    Proto2ProdError,
    UnsupportedMediaType,
)

JSON_TYPES = (b"application/json",)


@dataclass(frozen=True)
class Answer:
    """What a route sends back: a status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, error: Proto2ProdError) -> Answer:
        """The one place an error becomes a response: its status, `to_json()` as the body,
        and `Retry-After` where retrying helps."""
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
        if error.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return cls(error.status, error.to_json(), headers)

    def encode(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), allow_nan=False).encode()

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, self.status, headers=self.headers)


def error_response(error: Proto2ProdError) -> JSONResponse:
    return Answer.of(error).response()


async def send_answer(send: Send, answer: Answer, *, close: bool = False) -> None:
    """`answer` over raw ASGI; `close` when the rest of the request body is not read."""
    try:
        payload = answer.encode()
    except ValueError:  # NaN in an output: never invalid JSON on the wire
        answer = Answer.of(InvalidOutput("the model gave a non-finite output"))
        payload = answer.encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in answer.headers.items()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    message: Message = {"type": "http.response.start", "status": answer.status, "headers": headers}
    await send(message)
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
            refused = UnsupportedMediaType(
                f"send JSON (Content-Type: application/json), not {media.decode()!r}"
            )
            await send_answer(send, Answer.of(refused), close=True)
            return
        too_large = Answer.of(
            PayloadTooLarge(
                f"the request body is over the limit of {self.max_bytes} bytes "
                f"(PROTO2PROD_MAX_BODY_MB); send fewer or smaller items"
            )
        )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await send_answer(send, too_large, close=True)
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
            await send_answer(send, too_large, close=True)
