"""`POST /generate`: one item in, its generated text out as server-sent events.

    POST /generate  {"input": {"prompt": "...", "max_new_tokens": 64}}
    -> 200 text/event-stream, X-Model-Version
       event: chunk   data: {"text": "..."}            one per token that adds text
       event: done    data: {"finish_reason": "stop" | "length", "prompt_tokens": n,
                             "completion_tokens": n, "text": "...", "model", "version"}
       event: error   data: the error body ({"error", "message", "status", ...})

Refusals before the first token are plain JSON answers with their status, as on /predict
(401 without a key, 400 for a body that is not `{"input": {...}}`, 422 naming the field,
429 with `Retry-After` when the decoding queue is full, 503 before a version is loaded,
504 when no token came in time). Once streaming, a late or failed sequence ends with an
`error` event. A client that disconnects frees its slot at the next step.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from proto2prod.errors import InvalidInput, InvalidJSON, InvalidRequest, NotReady, Refused
from proto2prod.service import metrics
from proto2prod.service.http import Answer, send_answer
from proto2prod.service.predict import BodyReader, ClientGone, header_of
from proto2prod.service.stepping import Event, Generation

if TYPE_CHECKING:
    from proto2prod.service.answering import Answering

log = logging.getLogger("proto2prod.service")

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # a proxy in front (nginx) passes each event at once
]


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def parse_item(body: bytes) -> Any:
    """`{"input": {...}}` -> the item; 400 for anything else."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidJSON('the body is not valid JSON; send {"input": {...}}') from None
    if not isinstance(document, dict) or "input" not in document:
        raise InvalidRequest(
            'the body must be a JSON object with one item under "input": {"input": {...}}',
            field="input",
            index=None,
        )
    return document["input"]


class GenerateEndpoint:
    """ASGI middleware serving `POST /generate`; all else passes on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        answering: Callable[[], Answering | None],
        reader: BodyReader,
        timeout_s: float,
        authorize: Callable[[str | None], object] | None = None,
    ) -> None:
        self.app = app
        self.answering = answering
        self.reader = reader
        self.timeout_s = timeout_s
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/generate" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        answering = self.answering()
        try:
            if self.authorize is not None:
                self.authorize(header_of(scope, b"authorization"))
            body, held = await self.reader.read(receive)
            self.reader.release(held)
            if answering is None:
                raise NotReady("the service is starting")
            generation = answering.start_generation(parse_item(body), self.timeout_s)
        except ClientGone:
            return
        except (Refused, InvalidInput) as refused:
            await self._refuse(send, Answer.of(refused), answering)
            return
        await self._stream(generation, receive, send, answering)

    async def _refuse(self, send: Send, answer: Answer, answering: Answering | None) -> None:
        await send_answer(send, answer, close=answer.status in (401, 403, 408, 413))
        if answering is not None:
            metrics.count_request(answering.model, "none", answer.status)
        log.info(
            "/generate %d %s: %s",
            answer.status,
            answer.body.get("error"),
            answer.body.get("message"),
        )

    async def _stream(
        self, generation: Generation, receive: Receive, send: Send, answering: Answering
    ) -> None:
        """The first event decides the status (an error before any token is a plain
        answer); then each event as it comes, until done, an error, or the client leaves."""
        watcher = asyncio.create_task(_disconnected(receive, generation))
        try:
            events = generation.stream()
            first = await anext(events)
            if first.error is not None:
                await self._refuse(send, Answer.of(first.error), answering)
                return
            headers = [*STREAM_HEADERS, (b"x-model-version", generation.version.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            status = await self._send_events(first, events, generation, send, answering.model)
            metrics.count_request(answering.model, generation.version, status)
        except OSError:  # the client went away while we wrote
            pass
        finally:
            generation.cancel()
            watcher.cancel()

    async def _send_events(
        self, first: Event, events: Any, generation: Generation, send: Send, model: str
    ) -> int:
        """Each event as it comes; those that came meanwhile go in one write."""
        pending = [first]
        while True:
            while pending[-1].kind == "chunk" and not generation.events.empty():
                pending.append(generation.events.get_nowait())
            last = pending[-1]
            payload = b"".join(self._payload(e, generation, model) for e in pending)
            ended = last.kind != "chunk"
            await send({"type": "http.response.body", "body": payload, "more_body": not ended})
            if ended:
                return last.error.status if last.error is not None else 200
            pending = [await anext(events)]

    @staticmethod
    def _payload(event: Event, generation: Generation, model: str) -> bytes:
        if event.kind == "chunk":
            return sse("chunk", {"text": event.text})
        if event.error is not None:
            return sse("error", event.error.to_json())
        sequence = generation.sequence
        done = {"finish_reason": sequence.finish_reason, **sequence.counts}
        done |= {"text": sequence.text, "model": model, "version": generation.version}
        return sse("done", done)


async def _disconnected(receive: Receive, generation: Generation) -> None:
    """Waits for the client to go (the body has been read: what comes now is the end)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            generation.cancel()
            return
