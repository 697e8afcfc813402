"""Step batching for generative models: sequences of many requests share each forward pass.

A generative model runs one forward pass per token, so batching whole requests would make
every sequence wait for the slowest. Here the unit is one decoding step (iteration-level, or
"continuous", batching, as vLLM and TGI do it): one thread loops over the active sequences,
each step advancing every one of them by a token; between steps, finished, cancelled and
late sequences leave and waiting ones join, up to `max_active`. A step never mixes
versions: active sequences are grouped by the predictor they started on, so across a live
swap a sequence finishes on its own version, and each group is one forward pass.

The request side (service/generate.py, and /predict through service/answering.py) gets its
events on its own event loop: a chunk of text, then `done` or an error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proto2prod.errors import ModelFailed, Proto2ProdError, Timeout, TooManyRequests

if TYPE_CHECKING:
    from proto2prod.generation import Continuation, Prompt
    from proto2prod.predictor import Predictor

log = logging.getLogger("proto2prod.service")


@dataclass(frozen=True)
class Event:
    """What a sequence tells its request: `chunk` (text), `done`, or `error`."""

    kind: str
    text: str = ""
    error: Proto2ProdError | None = None


class Generation:
    """One request's sequence in the service: its version, its deadline, its events."""

    def __init__(self, predictor: Predictor, prompt: Prompt, deadline: float, version: str) -> None:
        assert predictor.decoder is not None
        self.predictor = predictor
        self.version = version
        self.sequence: Continuation = predictor.decoder.start(prompt)
        self.deadline = deadline
        """On `time.monotonic()`'s clock."""
        self.cancelled = False
        """Set by the request when its client has gone: the slot frees at the next step."""
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.first_token_at: float | None = None

    def emit(self, event: Event) -> None:
        """From the stepping thread: hand `event` to the request's loop (a loop that has
        closed has no one to tell: the sequence leaves at the next step)."""
        deliver([(self, event)])

    def cancel(self) -> None:
        self.cancelled = True

    async def stream(self) -> AsyncIterator[Event]:
        """The events as they come, ending after `done` or an error."""
        while True:
            event = await self.events.get()
            yield event
            if event.kind != "chunk":
                return


class StepBatcher:
    """Runs the decoding steps of every active generation on one thread."""

    def __init__(
        self,
        *,
        max_active: int,
        max_waiting: int,
        on_step: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.on_step = on_step
        """Called with (version, sequences, seconds) after each forward pass (`/metrics`)."""
        self._waiting: deque[Generation] = deque()
        self._active: list[Generation] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, generation: Generation) -> None:
        """Queue `generation`; 429 (with Retry-After) when the queue is full."""
        with self._wake:
            if len(self._waiting) >= self.max_waiting:
                raise TooManyRequests(
                    f"{len(self._active)} sequences are being generated and "
                    f"{len(self._waiting)} wait, the limit (PROTO2PROD_MAX_WAITING_SEQUENCES); "
                    f"retry shortly"
                )
            self._waiting.append(generation)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="proto2prod-steps", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._active:
                    self._wake.wait()
                if self._closed:
                    return
                self._admit()
            self._step()

    def _admit(self) -> None:
        """Between steps: the late and cancelled leave the queue, waiting ones join."""
        now = time.monotonic()
        for generation in list(self._waiting):
            if generation.cancelled or now > generation.deadline:
                self._waiting.remove(generation)
                if not generation.cancelled:
                    generation.emit(Event("error", error=_late(generation)))
        while self._waiting and len(self._active) < self.max_active:
            self._active.append(self._waiting.popleft())

    def _step(self) -> None:
        """One forward pass per version among the active sequences, then who leaves."""
        now = time.monotonic()
        keep: list[Generation] = []
        for generation in self._active:
            if generation.cancelled:
                continue
            if now > generation.deadline:
                generation.emit(Event("error", error=_late(generation)))
                continue
            keep.append(generation)
        groups: dict[int, list[Generation]] = {}
        for generation in keep:
            groups.setdefault(id(generation.predictor), []).append(generation)
        failed: set[int] = set()
        for key, group in groups.items():
            if not self._advance(group):
                failed.add(key)
        self._active = [
            g for g in keep if id(g.predictor) not in failed and g.sequence.finish_reason is None
        ]

    def _advance(self, group: list[Generation]) -> bool:
        decoder = group[0].predictor.decoder
        assert decoder is not None
        started = time.perf_counter()
        try:
            chunks = decoder.step([g.sequence for g in group])
        except Exception as exc:  # the version's forward pass: fail its sequences, go on
            log.exception("a decoding step of version %s failed", group[0].version)
            failed = ModelFailed(
                f"the model's forward pass failed ({type(exc).__name__}); the service's log "
                f"has the traceback"
            )
            for generation in group:
                generation.emit(Event("error", error=failed))
            return False
        if self.on_step is not None:
            self.on_step(group[0].version, len(group), time.perf_counter() - started)
        events: list[tuple[Generation, Event]] = []
        for generation, chunk in zip(group, chunks, strict=True):
            if chunk:
                events.append((generation, Event("chunk", chunk)))
            if generation.sequence.finish_reason is not None:
                events.append((generation, Event("done")))
        deliver(events)
        return True

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()


def deliver(events: list[tuple[Generation, Event]]) -> None:
    """A step's events, one wake-up per event loop (not one per sequence: each wake-up is a
    write to the loop's self-pipe and a turn of the loop)."""
    by_loop: dict[int, list[tuple[Generation, Event]]] = {}
    for generation, event in events:
        by_loop.setdefault(id(generation.loop), []).append((generation, event))
    for batch in by_loop.values():
        try:
            batch[0][0].loop.call_soon_threadsafe(_put, batch)
        except RuntimeError:  # that loop has closed: no one is listening
            for generation, _ in batch:
                generation.cancelled = True


def _put(batch: list[tuple[Generation, Event]]) -> None:
    for generation, event in batch:
        generation.events.put_nowait(event)


def _late(generation: Generation) -> Timeout:
    made = len(generation.sequence.new)
    return Timeout(
        f"the generation did not finish in time ({made} tokens made; PROTO2PROD_GENERATE_TIMEOUT_S)"
    )
