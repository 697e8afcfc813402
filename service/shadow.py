"""Shadow traffic, compared: how a challenger's answers differ from the champion's.

The challenger runs on a sample of the requests the champion has already answered (the
service's batcher runs it only when the model is otherwise idle, `MicroBatcher.submit_idle`);
this module compares the two answers and keeps the running totals the service shows in
`/metadata` and logs to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

NUMBER_TOLERANCE = 0.01
"""Two numeric answers agree when they differ by at most 1 % of the larger magnitude (or by
1e-6 near zero)."""


@dataclass(frozen=True)
class Difference:
    agree: bool
    """The same top label; for numbers, equal within `NUMBER_TOLERANCE`."""
    delta: float
    """For a label: |champion's top score - challenger's score for that class|; for numbers,
    the mean |difference| over the numbers in the answer."""


def compare(champion: Any, challenger: Any) -> Difference:
    """How one challenger answer differs from the champion's answer to the same input."""
    if isinstance(champion, dict) and "label" in champion and "scores" in champion:
        label = champion["label"]
        other = challenger.get("scores", {}) if isinstance(challenger, dict) else {}
        mine = float(champion["scores"].get(label, 0.0))
        theirs = float(other.get(label, 0.0))  # a top-k answer may leave the class out: 0
        agree = isinstance(challenger, dict) and challenger.get("label") == label
        return Difference(agree, abs(mine - theirs))
    a, b = list(_numbers(champion)), list(_numbers(challenger))
    if len(a) != len(b) or not a:
        return Difference(False, math.inf if a or b else 0.0)
    deltas = [abs(x - y) for x, y in zip(a, b, strict=True)]
    agree = all(d <= max(NUMBER_TOLERANCE * max(abs(x), abs(y)), 1e-6)
                for d, x, y in zip(deltas, a, b, strict=True))  # fmt: skip
    return Difference(agree, sum(deltas) / len(deltas))


def _numbers(value: Any) -> Iterator[float]:
    """The numbers in an answer, depth first (a Tensor output is nested lists)."""
    if isinstance(value, bool):
        yield float(value)
    elif isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from _numbers(value[key])


@dataclass
class ForwardTime:
    """Forward-pass time per item for one side, as the batcher measured it."""

    items: int = 0
    seconds: float = 0.0

    def add(self, size: int, seconds: float) -> None:
        self.items += size
        self.seconds += seconds

    @property
    def ms_per_item(self) -> float | None:
        return 1000 * self.seconds / self.items if self.items else None


@dataclass
class ShadowStats:
    """Running totals for one champion/challenger pair (reset when either version changes)."""

    champion: str
    challenger: str
    rate: float
    sampled: int = 0
    """Requests picked to shadow."""
    compared: int = 0
    """Items both sides answered."""
    agreed: int = 0
    delta_sum: float = 0.0
    dropped: int = 0
    """Sampled requests not shadowed: the service had no spare time for them."""
    failed: int = 0
    """Sampled requests whose shadow forward pass raised."""
    champion_time: ForwardTime = field(default_factory=ForwardTime)
    challenger_time: ForwardTime = field(default_factory=ForwardTime)

    def add(self, champion: list[Any], challenger: list[Any]) -> None:
        for mine, theirs in zip(champion, challenger, strict=True):
            difference = compare(mine, theirs)
            self.compared += 1
            self.agreed += difference.agree
            self.delta_sum += difference.delta

    def summary(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "rate": self.rate,
            "sampled": self.sampled,
            "compared": self.compared,
            "dropped": self.dropped,
            "failed": self.failed,
            "agreement": self.agreed / self.compared if self.compared else None,
            "mean_abs_delta": self.delta_sum / self.compared if self.compared else None,
            "champion_ms_per_item": self.champion_time.ms_per_item,
            "challenger_ms_per_item": self.challenger_time.ms_per_item,
        }
