"""Following the registry: the poll loop, a webhook's check now, a forced reload, and what
another worker of the same service learnt (service/fanout.py), and what another replica
learnt (service/peers.py). Every check runs through `RegistryChecks` (coalesced, on the
registry's threads, never on the request path)."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

from proto2prod.service import lifecycle
from proto2prod.service.checks import RegistryChecks
from proto2prod.service.fanout import Bus
from proto2prod.service.peers import Peers
from proto2prod.service.runtime import ModelRuntime

if TYPE_CHECKING:
    from proto2prod.service.rollout import Rollout


class Following:
    """The aliases this worker follows (the served one, and a shadow's or canary's)."""

    def __init__(
        self,
        runtime: ModelRuntime,
        rollout: Rollout | None,
        bus: Bus,
        worker: int,
        peers: Peers | None = None,
    ) -> None:
        self.runtime = runtime
        self.rollout = rollout
        self.bus = bus
        self.worker = worker
        self.peers = peers
        self.checks = RegistryChecks(self.runtimes)
        self._telling: set[asyncio.Task[Any]] = set()  # held until done (weak refs otherwise)

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
        """A registry event says `alias` moved: the poll's check, at once (webhooks), here,
        in every other worker of the service and in every peer replica."""
        if alias in self.runtimes():
            self.bus.publish("check", alias=alias, worker=self.worker)
            self.tell_peers("check", alias=alias, name=self.runtime.ref.name)
            self.checks.schedule(alias, f"registry event for {alias}")

    def tell_peers(self, kind: str, **data: Any) -> None:
        """Tell the other replicas, in a task (a slow peer never holds the caller)."""
        if self.peers is None:
            return
        task = asyncio.get_running_loop().create_task(self.peers.tell(kind, **data))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def on_peer(self, event: dict[str, Any]) -> None:
        """Another replica's news: act on it here and in this replica's other workers
        (never told on to the peers: an event does not loop)."""
        kind, origin = str(event.get("kind")), f"replica {event.get('origin')}"
        if kind == "check" and (
            event.get("name") != self.runtime.ref.name or event.get("alias") not in self.runtimes()
        ):
            return
        news: dict[str, Any] = {k: event[k] for k in ("alias", "pair", "reason") if k in event}
        self.bus.publish(kind, worker=origin, **news)
        await self.on_event({"kind": kind, "worker": origin, **news})

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
