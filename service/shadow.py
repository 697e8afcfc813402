"""Shadow traffic, compared: how a challenger's answers differ from the champion's.

The challenger runs on a sample of the requests the champion has already answered (the
service's batcher runs it only when the model is otherwise idle, `MicroBatcher.submit_idle`);
this module keeps the running totals of the comparisons the service shows in `/metadata`
and logs to MLflow. What "agree" means is the output field's to say (`Field.compare`: the
same top label, numbers within 1 %, vectors by cosine, masks by pixels, boxes by IoU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proto2prod.fields import Field


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
    outputs: Field
    """The champion's output field: it says what "agree" means."""
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
            difference = self.outputs.compare(mine, theirs)
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
