"""A canary that rolls itself back: which requests it answers, and when it has failed.

`--canary challenger:10` sends 10 % of requests to the challenger: by a keyed hash of the
`X-Request-Key` header when the client sends one (the same user keeps the same version; the
key is a secret of the service, so a client cannot work out offline which side a header
lands on), else at random.

What one client cannot do is decide the verdict:
- only answers that say something about the version count: 200s, and the failures (500,
  504); refusals of the input (4xx) and of load (429, 503) are neither errors nor samples;
- latency is taken per item and compared only between requests of the same size class
  (body bytes per item, in powers of two), so one huge valid image is judged against huge
  images, not against the usual small ones;
- a judgement needs `min_requests` answers on each side from at least `min_clients`
  distinct clients (their `X-Request-Key`, else their address), in the window and, for a
  latency verdict, in the size class compared.

Once judged failing (the error rate exceeds the champion's by more than `max_error_delta`,
or a size class's p99 exceeds the champion's by `max_p99_ratio` and 5 ms) the share drops
to 0 for good, until the challenger's alias moves to another version. The decision is made
on the event loop, in O(window) at most every `CHECK_EVERY` canary answers.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

CHECK_EVERY = 10
"""Canary answers between two judgements (sorting the window for a p99 costs ~20 us)."""
P99_SLACK_S = 0.005
"""A p99 within 5 ms of the champion's never rolls a canary back: below that, scheduling
noise on a fast model would."""


@dataclass(frozen=True)
class Sample:
    """One answer that counts: its latency per item, its size class, who asked, and
    whether the version failed it."""

    seconds_per_item: float
    size_class: int
    client: str
    failed: bool


def size_class(body_bytes: int, items: int) -> int:
    """Body bytes per item, as a power of two (1 kB and 1.9 kB are one class)."""
    per_item = max(1, body_bytes // max(1, items))
    return int(math.log2(per_item))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


@dataclass
class Window:
    """One side's latest samples."""

    size: int
    samples: collections.deque[Sample] = field(init=False)
    total: int = 0

    def __post_init__(self) -> None:
        self.samples = collections.deque(maxlen=self.size)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        self.total += 1

    def clients(self, samples: list[Sample] | None = None) -> int:
        return len({s.client for s in (self.samples if samples is None else samples)})

    @property
    def error_rate(self) -> float:
        n = len(self.samples)
        return sum(s.failed for s in self.samples) / n if n else 0.0

    def by_class(self) -> dict[int, list[Sample]]:
        found: dict[int, list[Sample]] = collections.defaultdict(list)
        for sample in self.samples:
            if not sample.failed:
                found[sample.size_class].append(sample)
        return found

    @property
    def p99(self) -> float:
        return _p99([s.seconds_per_item for s in self.samples if not s.failed])

    def summary(self) -> dict[str, Any]:
        return {
            "answered": self.total,
            "window": len(self.samples),
            "clients": self.clients(),
            "error_rate": round(self.error_rate, 4),
            "p99_ms_per_item": round(1000 * self.p99, 2),
        }


class CanaryGuard:
    """Routes a share of requests to the canary and takes it away when the canary fails."""

    def __init__(
        self,
        percent: float,
        *,
        window: int = 200,
        min_requests: int = 50,
        min_clients: int = 5,
        max_error_delta: float = 0.02,
        max_p99_ratio: float = 1.5,
        secret: bytes | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.configured = percent
        self.percent = percent
        self.window = window
        self.min_requests = min_requests
        self.min_clients = min_clients
        self.max_error_delta = max_error_delta
        self.max_p99_ratio = max_p99_ratio
        self.champion = Window(window)
        self.canary = Window(window)
        self.rolled_back: dict[str, Any] | None = None
        """When and why the canary was rolled back (None while it runs)."""
        self._secret = secret or secrets.token_bytes(32)
        self._random = rng or random.Random()
        self._since_check = 0

    def takes(self, key: str | None) -> bool:
        """Whether the canary answers this request: sticky by `key`, else random."""
        if self.percent <= 0:
            return False
        if key:
            digest = hmac.new(self._secret, key.encode(), hashlib.blake2b).digest()
            return int.from_bytes(digest[:8]) % 10_000 < self.percent * 100
        return self._random.random() * 100 < self.percent

    def record(self, canary: bool, sample: Sample) -> str | None:
        """Count one answer that counts; the reason, the one time it rolls the canary back."""
        (self.canary if canary else self.champion).add(sample)
        if not canary or self.percent <= 0:
            return None
        self._since_check += 1
        if self._since_check < CHECK_EVERY:
            return None
        self._since_check = 0
        reason = self.failing()
        if reason is not None:
            self.roll_back(reason)
        return reason

    def roll_back(self, reason: str) -> None:
        """Take the canary's share away (here, or because another worker decided so)."""
        self.percent = 0.0
        if self.rolled_back is None:
            self.rolled_back = {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "reason": reason,
            }

    def _enough(self, mine: list[Sample], theirs: list[Sample]) -> bool:
        return (
            min(len(mine), len(theirs)) >= self.min_requests
            and min(len({s.client for s in mine}), len({s.client for s in theirs}))
            >= self.min_clients
        )

    def failing(self) -> str | None:
        """Why the canary is worse than the margins allow, or None (also while too few)."""
        mine, theirs = self.champion, self.canary
        if not self._enough(list(mine.samples), list(theirs.samples)):
            return None
        if theirs.error_rate > mine.error_rate + self.max_error_delta:
            return (
                f"error rate {theirs.error_rate:.1%} against the champion's "
                f"{mine.error_rate:.1%} (margin {self.max_error_delta:.1%}, "
                f"PROTO2PROD_CANARY_MAX_ERROR_DELTA)"
            )
        champion_classes, canary_classes = mine.by_class(), theirs.by_class()
        for size in sorted(set(champion_classes) & set(canary_classes)):
            a, b = champion_classes[size], canary_classes[size]
            if not self._enough(a, b):
                continue
            ours = _p99([s.seconds_per_item for s in a])
            p99 = _p99([s.seconds_per_item for s in b])
            if p99 > max(ours * self.max_p99_ratio, ours + P99_SLACK_S):
                return (
                    f"p99 {1000 * p99:.1f} ms per item against the champion's "
                    f"{1000 * ours:.1f} ms, on bodies of ~{2**size} bytes per item (at most "
                    f"{self.max_p99_ratio:g}x, PROTO2PROD_CANARY_MAX_P99_RATIO)"
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
