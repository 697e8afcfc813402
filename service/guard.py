"""The service's outer ASGI layers: bounded `/admin/*` bodies, and no error without an answer.

`AdminBodies`: `/admin/*` takes the same body deadline (408) and budget of bytes in flight
(503) as `/predict`, with a small size limit (413: a webhook delivery or a reload is a few
hundred bytes), and the webhook receiver's signature headers are required before its body
is read (401), so an unsigned sender never makes the service hold anything.

`Unexpected`, the outermost layer: an exception escaping any layer inside it (ours or
BentoML's) is one JSON 500 at once and one log line with its traceback (never in the body),
instead of a client held until BentoML's traffic timeout.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proto2prod.errors import InternalError, PayloadTooLarge, Refused, Unauthorized
from proto2prod.service import peers, webhooks
from proto2prod.service.http import Answer, send_answer
from proto2prod.service.predict import BodyReader, ClientGone

log = logging.getLogger("proto2prod.service")

ADMIN_MAX_BYTES = 64 * 1024
"""The largest `/admin/*` body: MLflow's alias events are well under 1 kB."""
SIGNED_PATHS = ("/admin/registry-events", peers.PATH)
"""Routes authenticated by a webhook signature (MLflow's deliveries, the peers' events)."""


class AdminBodies:
    def __init__(self, app: ASGIApp, *, reader: BodyReader) -> None:
        self.app = app
        self.reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith("/admin/"):
            await self.app(scope, receive, send)
            return
        held = 0
        try:
            headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", ())}
            if path in SIGNED_PATHS and not all(headers.get(h) for h in webhooks.HEADERS):
                raise Unauthorized(webhooks.UNSIGNED)
            length = headers.get("content-length", b"")
            if length.isdigit() and int(length) > ADMIN_MAX_BYTES:
                raise PayloadTooLarge(f"an /admin body is at most {ADMIN_MAX_BYTES} bytes")
            try:
                body, held = await self.reader.read(receive, max_bytes=ADMIN_MAX_BYTES)
            except ClientGone:
                return
        except Refused as refused:
            self.reader.release(held)
            log.warning("%s %d: %s", path, refused.status, refused)
            await send_answer(send, Answer.of(refused), close=True)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, send)
        finally:
            self.reader.release(held)


class Unexpected:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("%s %s failed inside the service", scope["method"], scope["path"])
            if not started:
                error = InternalError("the service failed on this request; its log has the cause")
                await send_answer(send, Answer.of(error), close=True)
