"""Latency arithmetic: HDR histograms in microseconds, and the figures a report quotes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

LOWEST_US, HIGHEST_US, DIGITS = 1, 120_000_000, 3  # 1 us .. 120 s, 3 significant digits


def new() -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def encode(histogram: Any) -> str:
    return base64.b64encode(histogram.encode()).decode() if histogram.get_total_count() else ""


def decode(text: str) -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram.decode(base64.b64decode(text)) if text else new()


def merge(encoded: list[str]) -> Any:
    total = new()
    for text in encoded:
        if text:
            total.add(decode(text))
    return total


@dataclass(frozen=True)
class Summary:
    """What one load point measured: throughput, latency percentiles, failures."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        """Successful requests per second of measured time."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def summarize(histogram: Any, *, errors: int, seconds: float) -> Summary:
    def ms(percentile: float) -> float:
        return histogram.get_value_at_percentile(percentile) / 1000 if count else 0.0

    count = histogram.get_total_count()
    return Summary(
        requests=count,
        errors=errors,
        seconds=seconds,
        p50_ms=ms(50),
        p95_ms=ms(95),
        p99_ms=ms(99),
        max_ms=histogram.get_max_value() / 1000 if count else 0.0,
    )
