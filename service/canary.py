"""A canary that rolls itself back: which requests it answers, and when it has failed.

`--canary challenger:10` sends 10 % of requests to the challenger: by a hash of the
`X-Request-Key` header when the client sends one (the same user keeps the same version),
else at random. Each side's latest `window` answers are kept; once both sides have at
least `min_requests`, the canary is rolled back (its share drops to 0 for good, until the
service restarts or the challenger's alias moves to another version) when its error rate exceeds the
champion's by more than `max_error_delta`, or its p99 latency exceeds the champion's times
`max_p99_ratio` (and by 5 ms at least). The decision is made per request, in O(window) at most every
`CHECK_EVERY` canary answers, on the event loop: nothing else to schedule or to fail.
"""

from __future__ import annotations

import collections
import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

CHECK_EVERY = 10
"""Canary answers between two judgements (sorting the window for a p99 costs ~20 us)."""
P99_SLACK_S = 0.005
"""A p99 within 5 ms of the champion's never rolls a canary back: below that, scheduling
noise on a fast model would."""


@dataclass
class Window:
    """One side's latest answers: latency and whether each failed."""

    size: int
    latencies: collections.deque[float] = field(init=False)
    failures: collections.deque[bool] = field(init=False)
    failed: int = 0
    total: int = 0

    def __post_init__(self) -> None:
        self.latencies = collections.deque(maxlen=self.size)
        self.failures = collections.deque(maxlen=self.size)

    def add(self, seconds: float, failed: bool) -> None:
        if len(self.failures) == self.size:
            self.failed -= self.failures[0]
        self.latencies.append(seconds)
        self.failures.append(failed)
        self.failed += failed
        self.total += 1

    @property
    def error_rate(self) -> float:
        return self.failed / len(self.failures) if self.failures else 0.0

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "answered": self.total,
            "window": len(self.failures),
            "error_rate": round(self.error_rate, 4),
            "p99_ms": round(1000 * self.p99, 2),
        }


class CanaryGuard:
    """Routes a share of requests to the canary and takes it away when the canary fails."""

    def __init__(
        self,
        percent: float,
        *,
        window: int = 200,
        min_requests: int = 50,
        max_error_delta: float = 0.02,
        max_p99_ratio: float = 1.5,
        rng: random.Random | None = None,
    ) -> None:
        self.configured = percent
        self.percent = percent
        self.window = window
        self.min_requests = min_requests
        self.max_error_delta = max_error_delta
        self.max_p99_ratio = max_p99_ratio
        self.champion = Window(window)
        self.canary = Window(window)
        self.rolled_back: dict[str, Any] | None = None
        """When and why the canary was rolled back (None while it runs)."""
        self._random = rng or random.Random()
        self._since_check = 0

    def takes(self, key: str | None) -> bool:
        """Whether the canary answers this request: sticky by `key`, else random."""
        if self.percent <= 0:
            return False
        if key:
            bucket = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest())
            return bucket % 10_000 < self.percent * 100
        return self._random.random() * 100 < self.percent

    def record(self, canary: bool, seconds: float, failed: bool) -> str | None:
        """Count one answer; the reason, the one time the canary is rolled back by it."""
        (self.canary if canary else self.champion).add(seconds, failed)
        if not canary or self.percent <= 0:
            return None
        self._since_check += 1
        if self._since_check < CHECK_EVERY:
            return None
        self._since_check = 0
        reason = self.failing()
        if reason is not None:
            self.percent = 0.0
            self.rolled_back = {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "reason": reason,
            }
        return reason

    def failing(self) -> str | None:
        """Why the canary is worse than the margins allow, or None (also while too few)."""
        mine, theirs = self.champion, self.canary
        if min(len(mine.failures), len(theirs.failures)) < self.min_requests:
            return None
        if theirs.error_rate > mine.error_rate + self.max_error_delta:
            return (
                f"error rate {theirs.error_rate:.1%} against the champion's "
                f"{mine.error_rate:.1%} (margin {self.max_error_delta:.1%}, "
                f"PROTO2PROD_CANARY_MAX_ERROR_DELTA)"
            )
        if theirs.p99 > max(mine.p99 * self.max_p99_ratio, mine.p99 + P99_SLACK_S):
            return (
                f"p99 {1000 * theirs.p99:.1f} ms against the champion's {1000 * mine.p99:.1f} "
                f"ms (at most {self.max_p99_ratio:g}x, PROTO2PROD_CANARY_MAX_P99_RATIO)"
            )
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "configured_percent": self.configured,
            "rolled_back": self.rolled_back,
            "champion": self.champion.summary(),
            "canary": self.canary.summary(),
        }
