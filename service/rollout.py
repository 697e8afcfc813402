"""The challenger beside the champion: a shadow that is compared, or a canary that answers.

`proto2prod serve NAME@production --shadow challenger` or `--canary challenger:10`: the
service follows a second alias with its own `ModelRuntime` (the same definition, device and
checks: a version with other fields is refused and the champion serves on) and either

- **shadow**: after the champion has answered, a sample of requests (`shadow_rate`) also
  goes to the challenger, as idle work on the same batcher, so it never delays or fails a
  champion answer; when there is no spare time (requests wait for the model, or the
  CPU is busy: service/busy.py) the sample is dropped and counted;
- **canary**: `canary_percent` % of requests are answered by the challenger
  (`service/canary.py` decides which, and rolls it back when it does worse).

Either way the comparison is in `/metadata` and goes to an MLflow run every
`shadow_log_s` or `canary_log_s` (registry/rollouts.py). A pair is the two versions: when
either alias moves,
the comparison starts again (a new run), and when both point at the same version (the
challenger was promoted) there is nothing to compare: the champion answers everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from proto2prod.definition import Definition
from proto2prod.errors import Proto2ProdError
from proto2prod.registry import Registry
from proto2prod.registry.rollouts import ROLLED_BACK, RolloutRun
from proto2prod.service.batcher import MicroBatcher
from proto2prod.service.busy import Busy
from proto2prod.service.canary import CanaryGuard, Sample, size_class
from proto2prod.service.http import Answer
from proto2prod.service.predict import RequestInfo
from proto2prod.service.runtime import Loaded, ModelRuntime
from proto2prod.service.shadow import ShadowStats
from proto2prod.settings import ServiceSettings

log = logging.getLogger("proto2prod.service")

FAILED = (500, 504)
"""Answers that count against a canary: the model failed or was too slow. Refusals of the
input (4xx) and of load (429, 503) say nothing about the version."""


class Rollout:
    """The challenger's runtime and its comparison with the champion."""

    def __init__(
        self,
        config: ServiceSettings,
        definition: Definition,
        registry: Registry,
        champion: ModelRuntime,
        batcher: MicroBatcher[Any],
        *,
        worker: int = 1,
        secret: bytes | None = None,
    ) -> None:
        assert config.challenger is not None, "a rollout needs a shadow or a canary alias"
        self.config = config
        self.kind = "shadow" if config.shadow else "canary"
        self.alias = config.challenger
        self.champion = champion
        self.batcher = batcher
        self.worker = worker
        challenger = dataclasses.replace(
            config, model=f"{champion.ref.name}@{self.alias}", shadow=None, canary=None
        )
        self.runtime = ModelRuntime(
            challenger, definition, registry, worker=worker, drop_when_gone=True
        )
        self.registry = registry
        self.pair: tuple[str, str] | None = None
        self.shadow: ShadowStats | None = None
        self.canary: CanaryGuard | None = None
        self.run: RolloutRun | None = None
        self._finished: list[tuple[RolloutRun, dict[str, Any]]] = []
        self._random = random.Random()
        self.log_error: str | None = None
        self._logging = threading.Lock()  # the periodic log and a rollback's own
        self._tasks: set[asyncio.Task[None]] = set()
        self.load = Busy()
        """Watched only with a shadow (`log_forever` starts it)."""
        self.secret = secret
        """The canary's hash key, shared by the service's workers (service/fanout.py)."""
        self.on_rollback: Callable[[tuple[str, str], str], None] | None = None
        """Told when this worker rolls the canary back (the service tells the others)."""

    # -- the pair -------------------------------------------------------------------------
    def _challenger(self) -> Loaded | None:
        """The challenger, when there is one to compare: loaded, and another version."""
        champion, challenger = self.champion.current, self.runtime.current
        if champion is None or challenger is None or champion.version == challenger.version:
            pair = None
        else:
            pair = (champion.version, challenger.version)
        if pair != self.pair:
            self._new_pair(pair)
        if pair and self.canary is not None and self.canary.percent > 0:
            self._follow_recorded_rollback(pair)
        return challenger if pair else None

    def _follow_recorded_rollback(self, pair: tuple[str, str]) -> None:
        """A rollback of this pair recorded in the registry (by any replica: RolloutRun.
        record_rollback) rolls the canary back here too, at the check that read it."""
        recorded = self.runtime.registry_tags.get(ROLLED_BACK)
        if recorded is None:
            return
        try:
            said = json.loads(recorded)
        except ValueError:
            return
        if isinstance(said, dict) and said.get("champion") == pair[0]:
            reason = f"{said.get('reason')} (recorded in the registry)"
            self.canary.roll_back(reason)  # type: ignore[union-attr]
            self.canary.rolled_back["recorded"] = True  # type: ignore[union-attr,index]
            log.error("canary v%s rolled back: %s", pair[1], reason)

    def _new_pair(self, pair: tuple[str, str] | None) -> None:
        if self.run is not None:
            self._finished.append((self.run, self._metrics()))
        self.pair, self.run = pair, None
        self.shadow = self.canary = None
        if pair is None:
            return
        champion, challenger = pair
        self.run = RolloutRun(
            self.registry,
            self.champion.ref.name,
            self.kind,
            champion,
            challenger,
            worker=self.worker,
        )
        if self.kind == "shadow":
            outputs = self.champion.current.predictor.model.outputs  # type: ignore[union-attr]
            self.shadow = ShadowStats(champion, challenger, self.config.shadow_rate, outputs)
        else:
            self.canary = CanaryGuard(
                self.config.canary_percent,
                window=self.config.canary_window,
                min_requests=self.config.canary_min_requests,
                min_clients=self.config.canary_min_clients,
                secret=self.secret,
                max_error_delta=self.config.canary_max_error_delta,
                max_p99_ratio=self.config.canary_max_p99_ratio,
                rng=self._random,
            )
        log.info("%s: v%s against v%s", self.kind, champion, challenger)

    # -- per request ----------------------------------------------------------------------
    def pick(self, champion: Loaded, key: str | None) -> tuple[Loaded, bool]:
        """The version that answers this request, and whether it is the canary."""
        challenger = self._challenger()
        if challenger is not None and self.canary is not None and self.canary.takes(key):
            return challenger, True
        return champion, False

    def answered(
        self,
        loaded: Loaded,
        canary: bool,
        seconds: float,
        answer: Answer,
        prepared: list[Any],
        info: RequestInfo,
    ) -> None:
        """After an answer: the canary's score; the shadow's sample, as idle work."""
        challenger = self._challenger()
        if challenger is None:
            return
        counts = answer.status == 200 or answer.status in FAILED  # never a refusal
        if self.canary is not None and counts and self.pair is not None:
            items = max(1, len(prepared))
            sample = Sample(
                seconds / items,
                size_class(info.body_bytes, items),
                info.client,
                answer.status in FAILED,
            )
            reason = self.canary.record(canary, sample)
            if reason is not None:
                log.error("canary v%s rolled back: %s", challenger.version, reason)
                if self.on_rollback is not None:
                    self.on_rollback(self.pair, reason)
                self._log_soon()
        shadow = self.shadow
        if shadow is None or answer.status != 200 or loaded is challenger:
            return
        if self._random.random() >= shadow.rate:
            return
        shadow.sampled += 1
        future = None
        if not self.load.busy and not self.batcher.waiting:  # spare time only
            future = self.batcher.submit_idle(challenger.predictor, prepared)
        if future is None:
            shadow.dropped += 1
            return
        outputs = answer.body["outputs"]
        future.add_done_callback(lambda done: self._compare(shadow, outputs, done))

    @staticmethod
    def _compare(shadow: ShadowStats, outputs: list[Any], done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            shadow.dropped += 1
        elif done.exception() is not None:
            shadow.failed += 1
        else:
            shadow.add(outputs, done.result())

    def rolled_back_elsewhere(self, pair: tuple[str, str], reason: str, worker: object) -> None:
        """Another worker rolled the canary of `pair` back: so does this one."""
        self._challenger()
        if self.canary is None or self.pair != pair or self.canary.percent <= 0:
            return
        self.canary.roll_back(f"{reason} (judged by worker {worker})")
        log.error("canary v%s rolled back by worker %s: %s", pair[1], worker, reason)
        self._log_soon()

    def _log_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._log_guarded())
        self._tasks.add(task)  # held until done: the loop keeps weak references
        task.add_done_callback(self._tasks.discard)

    def on_batch(self, predictor: Any, size: int, seconds: float) -> None:
        """The batcher's timing of one forward pass, attributed to its side."""
        shadow, champion, challenger = self.shadow, self.champion.current, self.runtime.current
        if shadow is None:
            return
        if champion is not None and predictor is champion.predictor:
            shadow.champion_time.add(size, seconds)
        elif challenger is not None and predictor is challenger.predictor:
            shadow.challenger_time.add(size, seconds)

    # -- reporting ------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        self._challenger()
        current = self.runtime.current
        state: dict[str, Any] = {
            "kind": self.kind,
            "alias": self.alias,
            "version": current.version if current else None,
            "comparing": list(self.pair) if self.pair else None,
            "not_ready_reason": None if current else self.runtime.not_ready_reason,
            "last_swap_error": self.runtime.last_swap_error,
            "mlflow_run_id": self.run.run_id if self.run else None,
            "log_error": self.log_error,
        }
        if self.pair is None and current is not None:
            state["note"] = (
                f"the champion and the {self.kind} are both version {current.version}: "
                f"nothing to compare, the champion answers everything"
            )
        if self.shadow is not None:
            state["shadow"] = self.shadow.summary()
        if self.canary is not None:
            state["canary"] = self.canary.summary()
        return state

    def _metrics(self) -> dict[str, Any]:
        if self.shadow is not None:
            summary = self.shadow.summary()
            keys = (
                "sampled",
                "compared",
                "dropped",
                "failed",
                "agreement",
                "mean_abs_delta",
                "champion_ms_per_item",
                "challenger_ms_per_item",
            )
            return {f"shadow_{k}": summary[k] for k in keys}
        if self.canary is not None:
            summary = self.canary.summary()
            return {
                "canary_percent": summary["percent"],
                **{f"champion_{k}": v for k, v in summary["champion"].items()},
                **{f"canary_{k}": v for k, v in summary["canary"].items()},
            }
        return {}

    def log_now(self) -> None:
        """Log the running comparison (and the final one of a finished pair) to MLflow."""
        with self._logging:
            finished, self._finished = self._finished, []
            for run, metrics in finished:
                run.log(metrics)
                run.end()
            current = self.run
            if current is None:
                return
            tags = {}
            if self.canary is not None and self.canary.rolled_back is not None:
                tags[ROLLED_BACK] = self.canary.rolled_back["reason"]
                if not self.canary.rolled_back.get("recorded"):
                    current.record_rollback(self.canary.rolled_back["reason"])
                    self.canary.rolled_back["recorded"] = True
            current.log(self._metrics(), tags)

    async def log_forever(self) -> None:
        """Every `shadow_log_s` (a shadow) or `canary_log_s` (a canary), until the service
        stops (and, for a shadow, watch how busy the service is)."""
        if self.kind == "shadow":
            watch = asyncio.get_running_loop().create_task(self.load.watch())
            self._tasks.add(watch)
        while True:
            shadow = self.kind == "shadow"
            await asyncio.sleep(self.config.shadow_log_s if shadow else self.config.canary_log_s)
            await self._log_guarded()

    async def _log_guarded(self) -> None:
        """A failure to log is logged and shown in /metadata, never raised."""
        try:
            await asyncio.to_thread(self.log_now)
            self.log_error = None
        except Proto2ProdError as exc:
            self.log_error = str(exc)
            log.warning("could not log the %s comparison: %s", self.kind, exc)
