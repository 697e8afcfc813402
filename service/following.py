"""Following the registry: the poll loop, a webhook's check now, a forced reload, and what
another worker of the same service learnt (service/fanout.py). Every check runs through
`RegistryChecks` (coalesced, on the registry's threads, never on the request path)."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

from proto2prod.service import lifecycle
from proto2prod.service.checks import RegistryChecks
from proto2prod.service.fanout import Bus
from proto2prod.service.runtime import ModelRuntime

if TYPE_CHECKING:
    from proto2prod.service.rollout import Rollout


class Following:
    """The aliases this worker follows (the served one, and a shadow's or canary's)."""

    def __init__(self, runtime: ModelRuntime, rollout: Rollout | None, bus: Bus, worker: int):
        self.runtime = runtime
        self.rollout = rollout
        self.bus = bus
        self.worker = worker
        self.checks = RegistryChecks(self.runtimes)

    def runtimes(self) -> dict[str, ModelRuntime]:
        """Each alias the service follows and its runtime (the webhook's targets)."""
        followed = {self.runtime.ref.alias or "": self.runtime}
        if self.rollout is not None:
            followed[self.rollout.alias] = self.rollout.runtime
        return followed

    async def poll(self) -> None:
        """Load, then follow the alias, forever: no failure ends this task. Each is logged
        in one line with its reason (a traceback only for what is our own bug), counted in
        /metadata, and retried with back-off; a failed start-up is retried by the checks."""
        await self.checks.guarded(self.runtime, self.runtime.start, "start-up")
        if self.rollout is not None:
            challenger, what = self.rollout.runtime, f"{self.rollout.kind} start-up"
            await self.checks.guarded(challenger, challenger.start, what)
        lifecycle.settle_garbage_collector()
        while True:
            await asyncio.sleep(self.runtime.next_poll_in())
            for alias in self.runtimes():
                task = self.checks.schedule(alias, f"registry check of {alias or 'it'}")
                if task is not None:
                    await asyncio.shield(task)

    async def check_now(self, alias: str) -> None:
        """A registry event says `alias` moved: the poll's check, at once (webhooks), here
        and in every other worker of the service."""
        if alias in self.runtimes():
            self.bus.publish("check", alias=alias, worker=self.worker)
            self.checks.schedule(alias, f"registry event for {alias}")

    async def reload(self) -> dict[str, Any]:
        """`/admin/reload`: check now, retrying a refused version, in every worker."""
        self.bus.publish("reload", worker=self.worker)
        return dict(
            await self.checks.run(functools.partial(self.runtime.check, retry_refused=True))
        )

    async def on_event(self, event: dict[str, Any]) -> None:
        """Another worker's news: act on it as if it came here."""
        kind, worker = event.get("kind"), event.get("worker")
        if kind == "check":
            self.checks.schedule(str(event.get("alias")), f"registry event (from worker {worker})")
        elif kind == "reload":
            step = functools.partial(self.runtime.check, retry_refused=True)
            await self.checks.guarded(self.runtime, step, f"forced reload (from worker {worker})")
        elif kind == "canary-rollback" and self.rollout is not None:
            pair = event.get("pair") or []
            if len(pair) == 2:
                reason = str(event.get("reason"))
                self.rollout.rolled_back_elsewhere((str(pair[0]), str(pair[1])), reason, worker)
