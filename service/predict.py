"""`POST /predict`, served ahead of BentoML's API dispatch: lean, and bounded at every step.

BentoML's dispatch reads the whole body, parses it with pydantic on the event loop and only
then lets our code see it. Under hostile load that fails three ways (all measured on real
processes): concurrent large bodies parse into ~10x their size and exhaust memory; decoding
and preprocessing run on the event loop, so an expensive request stalls even `/readyz`;
senders that dribble a body hold their slot for the whole traffic timeout. This ASGI layer
answers `POST /predict` itself, in order:

1. **Body**: read under `PROTO2PROD_BODY_TIMEOUT_S` (408 past it: a slow sender loses its
   place), against a budget of body bytes held by all requests together
   (`PROTO2PROD_MAX_INFLIGHT_MB`; 503 with Retry-After past it), counted as bytes arrive, so
   a sender holds only what it really sent.
2. **Admission**: a slot is taken only once the body is whole (429 with Retry-After past
   `PROTO2PROD_MAX_CONCURRENCY`).
3. **Parse**: JSON; large bodies are parsed in a worker thread.
4. **Answer**: `answer(inputs, deadline, info)`, the service's model-specific part
   (validation, preprocessing off the loop, batching, the version), under the deadline.

The `@bentoml.api` declaration of `/predict` stays: it gives `/docs` the fields' schema and
BentoML's clients their route; its calls land here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from proto2prod.errors import (
    InvalidJSON,
    InvalidRequest,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    Refused,
    RequestTimeout,
    TooManyRequests,
)
from proto2prod.service.http import Answer, send_answer

log = logging.getLogger("proto2prod.service")

PARSE_INLINE_BYTES = 256 * 1024
"""Bodies up to this size are parsed on the event loop (about a millisecond); larger ones in
a worker thread, so one large body never stalls the others."""


Answerer = Callable[[list[Any], float, "RequestInfo"], Awaitable[Answer]]
"""`answer(inputs, deadline, info)`: `deadline` is on the event loop's clock (`loop.time()`);
`info` says what else the answer needs to know of the request."""

SMALL_BODY_BYTES = 16 * 1024
"""A body this small holds at most a few thousand numbers: validating it on the event loop
costs less than a hop to a worker thread."""
SMALL_STRING_CHARS = 2048
"""An encoded image this short decodes to at most ~2 M pixels (deflate expands at most
~1,032:1), a few milliseconds; a longer one can be a 16 M-pixel image in 20 kB."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_concurrency: int
    max_inflight_bytes: int
    body_timeout_s: float
    timeout_s: float


class ClientGone(Exception):
    """The client disconnected (or an outer layer cut the body off): nothing to answer."""


@dataclass(frozen=True)
class RequestInfo:
    """What the answer needs to know of a request besides its items."""

    small: bool
    """Small enough to validate and preprocess on the event loop."""
    key: str | None = None
    """The `X-Request-Key` header (a canary keeps a key on one side)."""
    client: str = ""
    """Who asked, for judgements one client must not make: the key, else the address."""
    body_bytes: int = 0


class BodyReader:
    """Reads request bodies under a deadline and one budget of bytes held by all requests
    together (`/predict` and `/admin/*` share it)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.inflight_bytes = 0
        """Body bytes held by all requests together (the memory budget's count)."""

    async def read(self, receive: Receive, *, max_bytes: int | None = None) -> tuple[bytes, int]:
        """The whole body and the bytes it holds of the budget (the caller releases them
        with `release`). `RequestTimeout` past the deadline, `PayloadTooLarge` past
        `max_bytes`, `Overloaded` past the budget, `ClientGone` on a disconnect."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        chunks: list[bytes] = []
        held = 0
        try:
            async with asyncio.timeout_at(deadline):  # no task per chunk, unlike wait_for
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    if max_bytes is not None and held + len(chunk) > max_bytes:
                        raise PayloadTooLarge(f"the request body is over {max_bytes} bytes")
                    if self.inflight_bytes + len(chunk) > self.limits.max_inflight_bytes:
                        raise Overloaded(
                            f"the service holds {self.inflight_bytes // 1_000_000} MB of request "
                            f"bodies, its budget (PROTO2PROD_MAX_INFLIGHT_MB); retry shortly"
                        )
                    self.inflight_bytes += len(chunk)
                    held += len(chunk)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks), held
        except TimeoutError:
            self.inflight_bytes -= held
            raise RequestTimeout(
                f"the request body did not arrive within {self.limits.body_timeout_s:g} "
                f"s (PROTO2PROD_BODY_TIMEOUT_S); send it at once"
            ) from None
        except BaseException:
            self.inflight_bytes -= held
            raise

    def release(self, held: int) -> None:
        self.inflight_bytes -= held


class PredictEndpoint:
    """ASGI middleware serving `POST /predict` through `answerer()`; all else passes on.

    `answerer` is a callable returning the service's `answer` once the service exists (None
    before), because middlewares are built before BentoML instantiates the service.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        answerer: Callable[[], Answerer | None],
        reader: BodyReader,
        authorize: Callable[[str | None], object] | None = None,
    ) -> None:
        self.app = app
        self.answerer = answerer
        self.reader = reader
        self.limits = reader.limits
        self.authorize = authorize
        """Checks the `Authorization` header (raises `Refused`): API keys, before the body."""
        self.inside = 0
        """Requests with a whole body, being answered (the admission count)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        held = 0
        try:
            if self.authorize is not None:
                self.authorize(header_of(scope, b"authorization"))
            try:
                body, held = await self.reader.read(receive)
            except ClientGone:
                return
            key = header_of(scope, b"x-request-key")
            client = scope.get("client")
            info = RequestInfo(
                small=len(body) <= SMALL_BODY_BYTES,
                key=key,
                client=key or (str(client[0]) if client else ""),
                body_bytes=len(body),
            )
            answer = await self._admit_and_answer(body, info)
        except Refused as refused:
            answer = Answer.of(refused)
        finally:
            self.reader.release(held)
        # 401, 403, 408 and 413 leave the body unread: the connection cannot be reused
        await send_answer(send, answer, close=answer.status in (401, 403, 408, 413))
        if answer.status >= 400 and answer.status != 503:
            # one line, never the input and never a traceback: the client's mistake, not ours
            log.info(
                "/predict %d %s: %s",
                answer.status,
                answer.body.get("error"),
                answer.body.get("message"),
            )

    async def _admit_and_answer(self, body: bytes, info: RequestInfo) -> Answer:
        if self.inside >= self.limits.max_concurrency:
            return Answer.of(
                TooManyRequests(
                    f"{self.inside} requests are being served, the limit is "
                    f"{self.limits.max_concurrency} (PROTO2PROD_MAX_CONCURRENCY); retry shortly"
                )
            )
        self.inside += 1
        try:
            deadline = asyncio.get_running_loop().time() + self.limits.timeout_s
            inputs = await _parse(body)
            answer = self.answerer()
            if answer is None:
                return Answer.of(NotReady("the service is starting"))
            if info.small and any(
                isinstance(x, str) and len(x) > SMALL_STRING_CHARS for x in inputs
            ):
                info = dataclasses.replace(info, small=False)
            return await answer(inputs, deadline, info)
        finally:
            self.inside -= 1


def header_of(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


async def _parse(body: bytes) -> list[Any]:
    """`{"inputs": [...]}` -> the list; 400 for anything else."""
    try:
        if len(body) > PARSE_INLINE_BYTES:
            document = await asyncio.to_thread(json.loads, body)
        else:
            document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidJSON('the body is not valid JSON; send {"inputs": [item, ...]}') from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise InvalidRequest(
            'the body must be a JSON object with a list under "inputs": {"inputs": [item, ...]}',
            field="inputs",
            index=None,
        )
    return document["inputs"]
