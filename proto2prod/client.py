"""`proto2prod.client`: the Python client of a proto2prod service, sync and async.

    from proto2prod.client import Client

    with Client("http://127.0.0.1:3000", api_key=...) as client:
        prediction = client.predict([{"image": png_base64}])
        prediction.outputs, prediction.version
        for chunk in client.generate({"prompt": "Once"}):   # a generative model
            print(chunk.text, end="")

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
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from proto2prod.errors import (
    InvalidInput,
    NotAService,
    Overloaded,
    Proto2ProdError,
    ServiceUnreachable,
)
from proto2prod.replies import Chunk, EventReader, Prediction, Reply, prediction, refusal

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AsyncClient",
    "Chunk",
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

    def _reader(self, headers: Any) -> EventReader:
        return EventReader(self.url, headers.get("x-model-version", ""))

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

    def generate(self, item: Any) -> Iterator[Chunk]:
        """A generative model's text for `item`, chunk by chunk as the service streams it
        (`POST /generate`); the last chunk has `finish_reason`. Refusals before the first
        token raise as `predict`'s do (429/503 retried within the budget); an error event
        mid-stream raises the service's error."""
        import httpx

        started, tries = time.monotonic(), 0
        while True:
            try:
                with self.http.stream("POST", "/generate", json={"input": item}) as response:
                    if response.status_code == 200:
                        reader = self._reader(response.headers)
                        for line in response.iter_lines():
                            if (chunk := reader.feed(line)) is not None:
                                yield chunk
                        reader.check_finished()
                        return
                    reply = Reply(response.status_code, dict(response.headers), response.read())
            except httpx.HTTPError as exc:
                raise self._unreachable("/generate", exc) from None
            tries += 1
            wait = self._wait(reply, True, started, tries)
            if wait is None:
                raise refusal(reply)
            time.sleep(wait)

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

    async def generate(self, item: Any) -> AsyncIterator[Chunk]:
        """As `Client.generate`."""
        import httpx

        started, tries = time.monotonic(), 0
        while True:
            try:
                async with self.http.stream("POST", "/generate", json={"input": item}) as response:
                    if response.status_code == 200:
                        reader = self._reader(response.headers)
                        async for line in response.aiter_lines():
                            if (chunk := reader.feed(line)) is not None:
                                yield chunk
                        reader.check_finished()
                        return
                    body = await response.aread()
                    reply = Reply(response.status_code, dict(response.headers), body)
            except httpx.HTTPError as exc:
                raise self._unreachable("/generate", exc) from None
            tries += 1
            wait = self._wait(reply, True, started, tries)
            if wait is None:
                raise refusal(reply)
            await asyncio.sleep(wait)

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
