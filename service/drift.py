"""Drift: live traffic's statistics against the reference recorded with the version.

Bounded and off the hot path: answering a request only appends a reference to its items,
tensors and outputs to a short queue (`PENDING` requests; under load the oldest are
dropped, so what is tracked becomes a sample); twice a second a worker thread turns what
is queued into statistics (proto2prod/statistics.py) and keeps the latest `window` values
of each. PSI and KS are computed from those windows when asked (`/metadata`, and for
`/metrics` every `REFRESH_S`), and logged to MLflow once per window of new items.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from proto2prod import statistics
from proto2prod.errors import Proto2ProdError

log = logging.getLogger("proto2prod.service")

PENDING = 64
"""Requests waiting to be measured; past it the oldest are dropped (sampling under load)."""
DIGEST_S = 0.5
MIN_LIVE = 30
"""Live values a statistic needs before it gets a verdict."""
MIN_REQUESTS = 20
"""Distinct requests those values must come from: one client's request cannot decide a
verdict. Each request also weighs at most `window // MIN_REQUESTS` items of the window (a
request of 256 shifted items counts as 50 of a window of 1,000)."""


class DriftTracker:
    """One version's reference and the sliding windows of live values."""

    def __init__(self, model: Any, version: str, reference: dict[str, Any], window: int) -> None:
        self.model = model
        self.version = version
        self.reference = reference
        self.window = window
        self._pending: collections.deque[tuple[list[Any], list[Any], list[Any]]] = (
            collections.deque(maxlen=PENDING)
        )
        self._values: dict[str, collections.deque[tuple[float | str, int]]] = {
            name: collections.deque(maxlen=window) for name in reference["statistics"]
        }  # (value, the request it came from)
        self.per_request = max(1, window // MIN_REQUESTS)
        self._lock = threading.Lock()
        self.requests = 0
        """Requests seen (measured or dropped)."""
        self.items = 0
        """Items measured."""
        self.logged_at_items = 0
        self._request = 0  # a number per measured request (the digest thread's own)
        self.run: Any = None
        """The MLflow run its windows are logged to (registry/rollouts.py), once created."""

    def observe(self, items: list[Any], tensors: list[Any], outputs: list[Any]) -> None:
        """On the event loop, per answered request: O(1)."""
        self.requests += 1
        self._pending.append((items, tensors, outputs))

    def digest(self) -> int:
        """In a worker thread: measure what is queued; the number of items measured."""
        taken = []
        while self._pending:
            try:
                taken.append(self._pending.popleft())
            except IndexError:
                break
        measured = 0
        inputs, outputs = self.model.inputs, self.model.outputs
        rows: list[tuple[dict[str, float | str], int]] = []
        for items, tensors, answers in taken:
            self._request += 1
            step = max(1, len(items) // self.per_request)  # evenly spread, capped
            for index in range(0, len(items), step)[: self.per_request]:
                item, tensor, answer = items[index], tensors[index], answers[index]
                values = {
                    **statistics.input_values(inputs, item, tensor),
                    **statistics.output_values(outputs, answer),
                }
                rows.append((values, self._request))
                measured += 1
        with self._lock:
            for row, request in rows:
                for name, value in row.items():
                    if name in self._values:
                        self._values[name].append((value, request))
            self.items += measured
        return measured

    def report(self) -> dict[str, Any]:
        with self._lock:
            windows = {name: list(values) for name, values in self._values.items()}
        found = {}
        for name, pairs in windows.items():
            values = [value for value, _ in pairs]
            requests = len({request for _, request in pairs})
            if len(values) < MIN_LIVE or requests < MIN_REQUESTS:
                found[name] = {
                    "psi": None,
                    "ks_p": None,
                    "verdict": "too few",
                    "live": len(values),
                    "requests": requests,
                }
            else:
                found[name] = {
                    **statistics.compare(self.reference["statistics"][name], values),
                    "requests": requests,
                }
        return {
            "version": self.version,
            "reference": self.reference.get("source"),
            "reference_count": self.reference.get("count"),
            "window": self.window,
            "requests": self.requests,
            "items": self.items,
            "statistics": found,
        }

    def take_window(self) -> bool:
        """True once a window of new items arrived since the last time it said so."""
        if self.items - self.logged_at_items < self.window:
            return False
        self.logged_at_items = self.items
        return True


async def track(
    current: Callable[[], DriftTracker | None],
    export: Callable[[DriftTracker, dict[str, Any]], None],
    log_window: Callable[[DriftTracker, dict[str, Any]], None],
) -> None:
    """Forever: digest what the current tracker queued, export its PSI, log each window."""
    while True:
        await asyncio.sleep(DIGEST_S)
        tracker = current()
        if tracker is None:
            continue
        try:
            if await asyncio.to_thread(tracker.digest) == 0:
                continue
            report = await asyncio.to_thread(tracker.report)
            export(tracker, report)
            if tracker.take_window():
                await asyncio.to_thread(log_window, tracker, report)
        except Proto2ProdError as exc:  # the registry, for the log: keep tracking
            log.warning("drift: %s", exc)
        except Exception:  # our own bug: never take the service down for it
            log.exception("drift tracking failed; it goes on")


class DriftWatch:
    """The service's drift check: one tracker per version answered, fed from the request
    path (`observe`, O(1)), digested off it (`watch`), exported to `/metrics` and logged to
    one MLflow run per version once per window."""

    def __init__(self, model_name: str, model: Any, registry: Any, enabled: bool, window: int):
        self.model_name = model_name
        self.model = model
        self.registry = registry
        self.enabled = enabled
        self.window = window
        self.tracker: DriftTracker | None = None
        self.note = "off (PROTO2PROD_DRIFT=0)" if not enabled else "no answers yet"

    def observe(
        self,
        version: str,
        reference: dict[str, Any] | None,
        inputs: list[Any],
        prepared: list[Any],
        outputs: list[Any],
    ) -> None:
        """Queue one answered request of `version` for the drift check."""
        if not self.enabled:
            return
        tracker = self.tracker
        if tracker is None or tracker.version != version:
            if reference is None:
                self.tracker = None
                self.note = (
                    f"version {version} was published without reference statistics "
                    f"(before proto2prod recorded them): publish it again to check drift"
                )
                return
            tracker = self.tracker = DriftTracker(self.model, version, reference, self.window)
        tracker.observe(inputs, prepared, outputs)

    def report(self) -> dict[str, Any]:
        """What `/metadata` says of drift."""
        if self.tracker is None:
            return {"enabled": self.enabled, "note": self.note}
        return {"enabled": True, **self.tracker.report()}

    async def watch(self) -> None:
        """Forever (a task of the service): digest, export and log what was observed."""
        await track(lambda: self.tracker, self._export, self._log)

    def _export(self, tracker: DriftTracker, report: dict[str, Any]) -> None:
        from proto2prod.service import metrics

        psi = {name: found["psi"] for name, found in report["statistics"].items()}
        metrics.export_drift(self.model_name, tracker.version, psi)
        metrics.forget_dead_workers()

    def _log(self, tracker: DriftTracker, report: dict[str, Any]) -> None:
        """Once per window: PSI and KS per statistic, on one MLflow run per version."""
        from proto2prod.registry.rollouts import RolloutRun

        if tracker.run is None:
            tracker.run = RolloutRun(
                self.registry, self.model_name, "drift", tracker.version, "reference"
            )
        found = report["statistics"].items()
        psi = {f"psi/{name}": s["psi"] for name, s in found}
        tracker.run.log({**psi, **{f"ks_p/{name}": s["ks_p"] for name, s in found}})
