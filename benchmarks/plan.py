"""What a benchmark run measures: models, users, architectures, scenarios, timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proto2prod.benchmarks import models
from proto2prod.benchmarks.targets import IMAGE_ONLY
from proto2prod.errors import InvalidArgument

ARCHITECTURES = [
    "gradio",
    "prototype",
    "asgi",
    "decoupled",
    "node",
    "service",
    "bentoml-batchable",
    "mlflow",
    "bare",
    "litserve",
]
SCENARIOS = ["update", "memory", "queue", "shadow", "drift", "webhook", "fleet"]
OPT_IN = {"fleet"}
"""Scenarios run only when --scenarios names them (the fleet starts 9 replicas)."""
EXAMPLES = models.EXAMPLES


@dataclass
class Plan:
    models: list[str]
    users: list[int]
    duration: float = 20.0
    warmup: float = 3.0
    architectures: list[str] = field(default_factory=lambda: list(ARCHITECTURES))
    limit_batches: list[int] = field(default_factory=lambda: [1, 8, 32])
    limit_seconds: float = 3.0
    workers: int = 0
    rate: float = 0.0
    payload: str = "png"
    quick: bool = False
    scenarios: list[str] = field(default_factory=lambda: [s for s in SCENARIOS if s not in OPT_IN])
    update_seconds: float = 40.0
    memory_counts: tuple[int, ...] = (1, 2, 4)
    promotions: int = 10
    """Promotions timed by webhook, and again by poll (the webhook scenario)."""
    poll_s: float = 10.0
    """The poll the webhook is compared with (the service's default)."""
    device: str | None = None
    """PROTO2PROD_DEVICE for every server and the raw limit (None: each picks CUDA when
    there is one)."""
    refs: dict[str, str] = field(default_factory=dict)
    """model -> a reference in the user's registry (`--model REF`); others are examples."""
    entries: dict[str, str] = field(default_factory=dict)
    """model -> its definition's entry point (filled in for the examples)."""

    def __post_init__(self) -> None:
        for model in self.models:
            self.entries.setdefault(model, EXAMPLES.get(model, ""))
        self._images = {m: models.takes_images(e) for m, e in self.entries.items() if e}
        self._generates = {m: models.generates(e) for m, e in self.entries.items() if e}

    def images(self, model: str) -> bool:
        return self._images.get(model, False)

    @classmethod
    def from_options(
        cls,
        *,
        models: str,
        model: str | None,
        users: str,
        duration: float,
        warmup: float,
        architectures: str,
        workers: int,
        rate: float,
        payload: str,
        scenarios: str,
        quick: bool,
        device: str | None = None,
    ) -> Plan:
        """The plan the CLI's options describe; `InvalidArgument` names the option at fault."""
        refs: dict[str, str] = {}
        entries: dict[str, str] = {}
        if model is not None:
            from proto2prod.benchmarks.models import recorded_entry
            from proto2prod.registry.reference import ModelRef

            name = ModelRef.parse(model).name
            refs, entries, names = {name: model}, {name: recorded_entry(model)}, [name]
        else:
            names = [m.strip() for m in models.split(",") if m.strip()]
            unknown = [m for m in names if m not in EXAMPLES]
            if unknown or not names:
                raise InvalidArgument(f"--models {models!r}: choose from {', '.join(EXAMPLES)}")
        archs = [a.strip() for a in architectures.split(",") if a.strip()]
        if bad := [a for a in archs if a not in ARCHITECTURES]:
            raise InvalidArgument(f"--architectures: unknown {bad}; choose from {ARCHITECTURES}")
        if payload not in ("png", "json"):
            raise InvalidArgument(f"--payload {payload!r}: choose png or json")
        try:
            counts = [int(u) for u in users.split(",")]
        except ValueError:
            raise InvalidArgument(
                f"--users {users!r}: give comma-separated integers, e.g. 1,8,32"
            ) from None
        chosen = [x.strip() for x in scenarios.split(",") if x.strip() not in ("", "none")]
        if extra := set(chosen) - set(SCENARIOS):
            raise InvalidArgument(
                f"--scenarios: unknown {sorted(extra)}; choose from {', '.join(SCENARIOS)}, none"
            )
        plan = (
            cls.quick_plan(names, refs=refs, entries=entries)
            if quick
            else cls(
                models=names,
                users=counts,
                duration=duration,
                warmup=warmup,
                refs=refs,
                entries=entries,
            )
        )
        plan.architectures, plan.workers, plan.rate, plan.payload = archs, workers, rate, payload
        plan.scenarios, plan.device = chosen, device
        return plan

    def steps(self) -> int:
        """How many progress messages `run` says: one per step, for a progress bar."""
        total = 0
        for model in self.models:
            if self._generates.get(model):  # benchmarks/streams.py: 3 architectures
                total += 1 + 3 * (1 + (2 if self.quick else 3))
                continue
            image = self.images(model)
            per_model = [
                s for s in self.scenarios if image or s in ("shadow", "drift", "webhook", "fleet")
            ]
            total += 1 + len(per_model)
            for arch in self.architectures:
                total += 1 if arch in IMAGE_ONLY and not image else 2 + len(self.users)
        return total

    @classmethod
    def quick_plan(cls, names: list[str], **kwargs: Any) -> Plan:
        return cls(
            models=names,
            users=[1, 8],
            duration=3,
            warmup=0.5,
            limit_seconds=0.5,
            quick=True,
            update_seconds=16,
            memory_counts=(1, 2),
            promotions=3,
            poll_s=2.0,
            **kwargs,
        )
