"""`proto2prod.client`: the Python client of a proto2prod service, sync and async.

    from proto2prod.client import Client

    with Client("http://127.0.0.1:3000", api_key=...) as client:
        prediction = client.predict([{"image": png_base64}])
        prediction.outputs, prediction.version

One HTTP client for the service in the codebase: the remote prototype, `proto2prod drift`
and the benchmark use it. What it does that a bare `httpx.post` does not:

- **Errors as exceptions that say what to do.** A 422 raises `InvalidInput` naming the item's
  index and field; other refusals raise the error the service named (`proto2prod.errors`,
  with its status); a service that cannot be reached raises `ServiceUnreachable`; an answer
  that is not a proto2prod service's raises `NotAService`.
- **Retry-After honoured.** 429 and 503 are sent again after the `Retry-After` the service
  gave, within `retry_budget_s` in all; past it, `Overloaded`.
- **Bounded answers.** An answer over `max_answer_bytes` is refused as it streams in, never
  held whole (a wrong URL can be a file of gigabytes).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from proto2prod import errors
from proto2prod.errors import (
    InvalidInput,
    NotAService,
    Overloaded,
    Proto2ProdError,
    ServiceUnreachable,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AsyncClient",
    "Client",
    "InvalidInput",
    "NotAService",
    "Overloaded",
    "Prediction",
    "Reply",
    "ServiceUnreachable",
]

MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The most of an answer read (a batch of images fits many times over)."""
RETRIED = (429, 503)
DEFAULT_RETRY_AFTER_S = 1.0
"""The wait when a 429/503 gives no (readable) `Retry-After`."""


@dataclass(frozen=True)
class Prediction:
    """A 200 from `/predict`: one output per item, in order, and who answered."""

    outputs: list[Any]
    version: str
    model: str


@dataclass(frozen=True)
class Reply:
    """A bounded HTTP answer: status, headers (lower-case names) and the body's bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        try:
            found = json.loads(self.body)
        except (ValueError, RecursionError):
            return None
        return found if isinstance(found, dict) else None

    def message(self) -> str:
        found = self.object() or {}
        said = found.get("message") or found.get("error")
        return str(said) if isinstance(said, str | int | float) and said else self.describe()

    def describe(self) -> str:
        """What the answer is, in a few words (never its whole body)."""
        if not self.body:
            return "an empty body"
        found = self.object()
        if found is not None:
            return f"a JSON object with {', '.join(sorted(map(str, found))[:5]) or 'no keys'}"
        kind = self.headers.get("content-type", "unknown type").split(";")[0]
        return f"{len(self.body)} bytes of {kind}"

    def retry_after(self) -> float:
        """The wait the service asked for (seconds; an HTTP date is read as the default)."""
        given = self.headers.get("retry-after", "")
        try:
            return max(0.0, float(given))
        except ValueError:
            return DEFAULT_RETRY_AFTER_S


def refusal(reply: Reply) -> Proto2ProdError:
    """The error a non-200 answer stands for: the service's own kind where it names one (a
    proxy's page in front of it is a `Refused` with its status and a few words of what came).
    """
    body = reply.object() or {}
    if reply.status == 422 and body.get("error") == "InvalidInput":
        return _invalid_input(body)
    kind = getattr(errors, str(body.get("error")), None)
    if isinstance(kind, type) and issubclass(kind, errors.Refused) and kind.status == reply.status:
        details = {k: v for k, v in body.items() if k not in ("error", "message")}
        return kind(reply.message(), **details)
    found = errors.Refused(reply.message())
    found.status = reply.status  # a kind this client does not know: its status kept
    return found


def _invalid_input(body: dict[str, Any]) -> InvalidInput:
    index = body.get("index")
    return InvalidInput(
        str(body.get("field") or "input"),
        str(body.get("problem") or body.get("message")),
        str(body.get("expected") or "what the field's schema describes"),
        index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        key=body["key"] if isinstance(body.get("key"), str) else None,
    )


def prediction(reply: Reply, url: str, sent: int) -> Prediction:
    """A 200's body, checked: `outputs` has one entry per item sent."""
    body = reply.object() or {}
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != sent:
        raise NotAService(
            f"{url}/predict answered 200 with {reply.describe()}, not {sent} outputs: is it "
            f"a proto2prod service?"
        )
    version = reply.headers.get("x-model-version") or str(body.get("version", ""))
    return Prediction(outputs, version, str(body.get("model", "")))


class _Base:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        timeout: float,
        retry_budget_s: float,
        max_answer_bytes: int,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry_budget_s = retry_budget_s
        self.max_answer_bytes = max_answer_bytes
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _too_large(self, path: str, size: int, declared: bool) -> NotAService:
        said = f"declares {size} bytes" if declared else f"{size} bytes so far"
        return NotAService(
            f"{self.url}{path} answered more than {self.max_answer_bytes // 2**20} MiB "
            f"({said}), too large to read: not a proto2prod service's answer"
        )

    def _unreachable(self, path: str, exc: Exception) -> ServiceUnreachable:
        import httpx

        what = (
            f"did not answer within {self.timeout:g} s"
            if isinstance(exc, httpx.TimeoutException)
            else f"cannot be reached ({type(exc).__name__})"
        )
        return ServiceUnreachable(
            f"{self.url}{path} {what}; is the service running? Start it with: proto2prod "
            f"serve NAME@ALIAS --port PORT"
        )

    def _overloaded(self, reply: Reply, tries: int, started: float) -> Overloaded:
        return Overloaded(
            f"{self.url} answered {reply.status} ({reply.message()}) {tries} times over "
            f"{time.monotonic() - started:.1f} s, the retry budget ({self.retry_budget_s:g} "
            f"s); retry later or give the service more replicas"
        )

    def _check_size(self, path: str, declared: str, size: int) -> None:
        if declared.isdigit() and int(declared) > self.max_answer_bytes:
            raise self._too_large(path, int(declared), declared=True)
        if size > self.max_answer_bytes:
            raise self._too_large(path, size, declared=False)

    def _wait(self, reply: Reply, retry: bool, started: float, tries: int) -> float | None:
        """Seconds to wait before sending again; None: `reply` is the answer. `Overloaded`
        once a 429/503 with `Retry-After` comes past the budget."""
        if not (retry and reply.status in RETRIED and "retry-after" in reply.headers):
            return None
        wait = reply.retry_after()
        if time.monotonic() + wait - started > self.retry_budget_s:
            raise self._overloaded(reply, tries, started)
        return wait

    @staticmethod
    def _predict_request(items: Sequence[Any], request_key: str | None) -> dict[str, Any]:
        headers = {"X-Request-Key": request_key} if request_key else None
        return {"json": {"inputs": list(items)}, "headers": headers}

    def _prediction(self, reply: Reply, sent: int) -> Prediction:
        if reply.status != 200:
            raise refusal(reply)
        return prediction(reply, self.url, sent)

    def _metadata(self, reply: Reply) -> dict[str, Any]:
        if reply.status != 200:
            raise refusal(reply)
        found = reply.object()
        if found is None or not isinstance(found.get("name"), str):
            raise NotAService(
                f"{self.url}/metadata answered {reply.describe()}, not a proto2prod service's "
                f"metadata; check the URL"
            )
        return found


class Client(_Base):
    """A blocking client of one service. Thread-safe (one `httpx.Client` underneath)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_budget_s: float = 10.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        super().__init__(
            url,
            api_key=api_key,
            timeout=timeout,
            retry_budget_s=retry_budget_s,
            max_answer_bytes=max_answer_bytes,
        )
        self.http = httpx.Client(
            base_url=self.url, timeout=timeout, transport=transport, headers=self.headers
        )

    def predict(self, items: Sequence[Any], *, request_key: str | None = None) -> Prediction:
        """The outputs for `items`, in order. Raises `InvalidInput` (422: `index`, `field`),
        `Overloaded` (429/503 past the retry budget), `ServiceUnreachable`, `NotAService`,
        or the service's own refusal."""
        reply = self.send("POST", "/predict", **self._predict_request(items, request_key))
        return self._prediction(reply, len(items))

    def metadata(self) -> dict[str, Any]:
        """`/metadata`: the version served, its fields, the registry's state."""
        return self._metadata(self.send("GET", "/metadata"))

    def ready(self) -> bool:
        """`/readyz` answers 200 (False also when it cannot be reached)."""
        try:
            return self.send("GET", "/readyz", retry=False).status == 200
        except Proto2ProdError:
            return False

    def send(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> Reply:
        """One call, sent again after `Retry-After` on 429/503 within the budget."""
        started, tries = time.monotonic(), 0
        while True:
            reply = self._once(method, path, **kwargs)
            tries += 1
            wait = self._wait(reply, retry, started, tries)
            if wait is None:
                return reply
            time.sleep(wait)

    def _once(self, method: str, path: str, **kwargs: Any) -> Reply:
        import httpx

        try:
            with self.http.stream(method, path, **kwargs) as response:
                declared = response.headers.get("content-length", "")
                self._check_size(path, declared, 0)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    self._check_size(path, "", size)
                    chunks.append(chunk)
                return Reply(response.status_code, dict(response.headers), b"".join(chunks))
        except httpx.HTTPError as exc:
            raise self._unreachable(path, exc) from None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Base):
    """The same client for asyncio code (a FastAPI or Starlette front end, an agent)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_budget_s: float = 10.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx

        super().__init__(
            url,
            api_key=api_key,
            timeout=timeout,
            retry_budget_s=retry_budget_s,
            max_answer_bytes=max_answer_bytes,
        )
        self.http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, transport=transport, headers=self.headers
        )

    async def predict(self, items: Sequence[Any], *, request_key: str | None = None) -> Prediction:
        """As `Client.predict`."""
        reply = await self.send("POST", "/predict", **self._predict_request(items, request_key))
        return self._prediction(reply, len(items))

    async def metadata(self) -> dict[str, Any]:
        return self._metadata(await self.send("GET", "/metadata"))

    async def ready(self) -> bool:
        try:
            return (await self.send("GET", "/readyz", retry=False)).status == 200
        except Proto2ProdError:
            return False

    async def send(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> Reply:
        started, tries = time.monotonic(), 0
        while True:
            reply = await self._once(method, path, **kwargs)
            tries += 1
            wait = self._wait(reply, retry, started, tries)
            if wait is None:
                return reply
            await asyncio.sleep(wait)

    async def _once(self, method: str, path: str, **kwargs: Any) -> Reply:
        import httpx

        try:
            async with self.http.stream(method, path, **kwargs) as response:
                declared = response.headers.get("content-length", "")
                self._check_size(path, declared, 0)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    self._check_size(path, "", size)
                    chunks.append(chunk)
                return Reply(response.status_code, dict(response.headers), b"".join(chunks))
        except httpx.HTTPError as exc:
            raise self._unreachable(path, exc) from None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
