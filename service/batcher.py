"""An asyncio micro-batcher: concurrent requests share one forward pass.

Why our own and not BentoML's `batchable=True`: requests are validated and preprocessed
one by one *before* they join a batch, so one bad item fails its own request only; a
batch never mixes two model versions, so a request finishes on the version it started
with while a swap happens; and BentoML's dispatcher costs more per request than this loop
(docs/architecture.md; measured in the benchmark). The batch size adapts to load:
whatever is queued when the model becomes free goes in (up to `max_batch_size`); a batch
that is not full waits at most `wait_ms` for company.

Idle work (a shadow's requests, `submit_idle`) has its own bounded queue and thread: an
idle batch starts only when no request waits and no request batch runs, and a request that
arrives while it runs is not held up by it (its batch runs on the request thread at once).
Measured with a forward pass that waits (as a GPU call does), a shadow at rate 1.0 left a
sequential client's latency unchanged; on a busy CPU the shadow's own CPU check drops it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from proto2prod.errors import Overloaded

__all__ = ["MicroBatcher", "Overloaded"]

K = TypeVar("K")  # what a batch must share (the predictor of one model version)


@dataclass
class _Entry(Generic[K]):
    key: K
    items: Sequence[Any]
    future: asyncio.Future[list[Any]] = field(repr=False)


class MicroBatcher(Generic[K]):
    """Groups `submit` calls sharing a key into calls of `run(key, items)` on one thread."""

    def __init__(
        self,
        run: Callable[[K, list[Any]], list[Any]],
        *,
        max_batch_size: int = 32,
        wait_ms: float = 1.0,
        max_queue: int = 1024,
        on_batch: Callable[[K, int, float], None] | None = None,
        max_idle_queue: int = 64,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1000
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._pending: collections.deque[_Entry[K]] = collections.deque()
        self._queued_items = 0
        self._idle: collections.deque[_Entry[K]] = collections.deque()
        self._idle_items = 0
        self.max_idle_queue = max_idle_queue
        """Items of idle work that may wait; more are dropped (`submit_idle` says so)."""
        self._wake: asyncio.Event | None = None
        self._idle_wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._idle_worker: asyncio.Task[None] | None = None
        self._running = False
        """A request batch is in the forward pass."""
        # One thread for requests: the forward pass uses torch's own intra-op threads. Idle
        # work has a thread of its own, so a request never waits behind it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._idle_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idle")

    async def submit(self, key: K, items: Sequence[Any]) -> list[Any]:
        """Results for `items`, computed in batches with other requests for the same key.

        A request larger than `max_batch_size` is split across forward passes (one pass of
        a thousand items could exhaust a GPU's memory); it is queued whole or not at all.
        """
        if self._queued_items + len(items) > self.max_queue:
            raise Overloaded(
                f"{self._queued_items} items are already waiting for the model (its queue is "
                f"bounded by PROTO2PROD_MAX_QUEUE); retry shortly"
            )
        loop = self._started()
        size = self.max_batch_size
        entries = [
            _Entry(key, items[i : i + size], loop.create_future())
            for i in range(0, len(items), size)
        ]
        self._pending.extend(entries)
        self._queued_items += len(items)
        assert self._wake is not None
        self._wake.set()
        if len(entries) == 1:
            return await entries[0].future
        try:
            parts = await asyncio.gather(*(e.future for e in entries))
        except BaseException:
            for e in entries:  # one part failed or the caller gave up: skip the rest
                e.future.cancel()
            raise
        return [output for part in parts for output in part]

    @property
    def waiting(self) -> int:
        """Items of requests waiting for the model (idle work not counted)."""
        return self._queued_items

    def submit_idle(self, key: K, items: Sequence[Any]) -> asyncio.Future[list[Any]] | None:
        """Results for `items`, computed only when no `submit`ted request is waiting; None
        when the idle queue is full (the work is dropped, never queued unboundedly)."""
        if not items or len(items) > self.max_batch_size:
            return None
        if self._idle_items + len(items) > self.max_idle_queue:
            return None
        loop = self._started()
        entry = _Entry(key, items, loop.create_future())
        self._idle.append(entry)
        self._idle_items += len(items)
        assert self._idle_wake is not None
        self._idle_wake.set()
        return entry.future

    def _started(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._idle_wake = asyncio.Event()
            self._worker = loop.create_task(self._loop(), name="proto2prod-batcher")
            self._idle_worker = loop.create_task(self._idle_loop(), name="proto2prod-idle")
        return loop

    def _take(self, queue: collections.deque[_Entry[K]]) -> tuple[K, list[_Entry[K]]]:
        """The first entry's key, and as many entries with that key as fit one batch."""
        first = queue.popleft()
        taken, size, keep = [first], len(first.items), collections.deque[_Entry[K]]()
        while queue:
            entry = queue.popleft()
            if entry.key is first.key and size + len(entry.items) <= self.max_batch_size:
                taken.append(entry)
                size += len(entry.items)
            else:
                keep.append(entry)
        queue.extendleft(reversed(keep))
        if queue is self._pending:
            self._queued_items -= size
        else:
            self._idle_items -= size
        return first.key, taken

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if self.wait_s and self._queued_items < self.max_batch_size:
                await asyncio.sleep(self.wait_s)
            key, entries = self._take(self._pending)
            self._running = True
            try:
                await self._run_batch(key, entries, self._executor)
            finally:
                self._running = False
                if self._idle and self._idle_wake is not None:
                    self._idle_wake.set()

    async def _idle_loop(self) -> None:
        """Idle batches, on their own thread, started only while requests neither wait nor
        run (a request arriving meanwhile runs beside it, on the request thread)."""
        assert self._idle_wake is not None
        while True:
            while not self._idle or self._pending or self._running:
                self._idle_wake.clear()
                await self._idle_wake.wait()
            key, entries = self._take(self._idle)
            await self._run_batch(key, entries, self._idle_executor)

    async def _run_batch(
        self, key: K, entries: list[_Entry[K]], executor: ThreadPoolExecutor
    ) -> None:
        entries = [e for e in entries if not e.future.done()]  # cancelled: skip
        if not entries:
            return
        loop = asyncio.get_running_loop()
        items = [item for e in entries for item in e.items]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(executor, self._run, key, items)
        except Exception as exc:  # the forward pass failed: every request in it fails
            for e in entries:
                if not e.future.done():
                    e.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(key, len(items), time.perf_counter() - started)
        start = 0
        for e in entries:
            if not e.future.done():
                e.future.set_result(results[start : start + len(e.items)])
            start += len(e.items)

    async def close(self) -> None:
        for worker in (self._worker, self._idle_worker):
            if worker is not None:
                worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._idle_executor.shutdown(wait=False, cancel_futures=True)
