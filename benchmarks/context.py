"""What every measurement of one benchmark run shares: the plan, where the registry and the
logs are, how processes are placed on the cores, and the model being measured. Scenarios
take these two objects instead of a dozen keyword arguments each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto2prod.benchmarks import load
from proto2prod.benchmarks.plan import Plan
from proto2prod.benchmarks.targets import Placement, Target


@dataclass(frozen=True)
class Bench:
    """One benchmark run: its plan, registry (`home`), logs, scratch folder and cores."""

    plan: Plan
    home: Path
    logs: Path
    work: Path
    placement: Placement
    say: Callable[[str], None]

    @property
    def users(self) -> int:
        """The top user count: where a scenario measures what saturation costs."""
        return max(self.plan.users)

    @property
    def rounds(self) -> int:
        """Paired runs are loaded A B B A (one round each way in a quick run)."""
        return 1 if self.plan.quick else 2

    def measure(
        self, target: Target, payload: Path, *, users: int | None = None, **extra: Any
    ) -> load.Point:
        """Locust against `target` for the plan's duration (after its warm-up)."""
        return load.run(
            target,
            payload,
            users=self.users if users is None else users,
            duration=self.plan.duration,
            warmup=self.plan.warmup,
            placement=self.placement,
            **extra,
        )


@dataclass(frozen=True)
class Subject:
    """The model a measurement is of: its name, definition entry and request payload."""

    name: str
    entry: str
    payload: Path

    @property
    def ref(self) -> str:
        return f"{self.name}@production"
