"""One worker of the service, built from its parts (service/parts.py) when BentoML makes the
service: the runtime that holds the version, the request path, the rollout, the registry
follower, drift; and the tasks that run beside the requests. Free of BentoML, so it is
what the routes and the ASGI layers call (service/app.py wires it to BentoML).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from proto2prod.service import lifecycle
from proto2prod.service.answering import Answering
from proto2prod.service.drift import DriftWatch
from proto2prod.service.fanout import Bus
from proto2prod.service.following import Following
from proto2prod.service.parts import Parts
from proto2prod.service.peers import Peers, origin_of
from proto2prod.service.rollout import Rollout
from proto2prod.service.runtime import ModelRuntime

log = logging.getLogger("proto2prod.service")


class Serving:
    """One worker's parts, built from `PARTS`: what the routes and the ASGI layers call."""

    def __init__(self, parts: Parts, worker: int) -> None:
        assert parts.definition is not None, "the service is instantiated in BentoML's workers"
        config, definition = parts.config, parts.definition
        self.config = config
        self.worker = worker
        self.runtime = ModelRuntime(config, definition, parts.registry, worker=worker)
        self.drift = DriftWatch(
            parts.model_name, definition.model, parts.registry, config.drift, config.drift_window
        )
        self.answering = Answering(config, self.runtime, self.drift)
        self.bus = Bus()  # what one worker learns, the others act on (service/fanout.py)
        self.peers: Peers | None = None  # ... and the other replicas (service/peers.py)
        if config.peer_urls and config.webhook_secret:
            self.peers = Peers(
                config.peer_urls, config.webhook_secret, origin_of(self.bus.secret())
            )
        self.rollout: Rollout | None = None
        if config.challenger:
            self.rollout = Rollout(
                config,
                definition,
                parts.registry,
                self.runtime,
                self.answering.batcher,
                worker=worker,
                secret=self.bus.secret(),
            )
            self.rollout.on_rollback = self._rolled_back
        self.answering.rollout = self.rollout
        self.following = Following(self.runtime, self.rollout, self.bus, worker, self.peers)
        self.server: dict[str, str] = {}
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []

    def _rolled_back(self, pair: tuple[str, str], reason: str) -> None:
        """This worker's canary judged the challenger worse: so do the others and the peers."""
        self.bus.publish("canary-rollback", pair=list(pair), reason=reason, worker=self.worker)
        self.following.tell_peers("canary-rollback", pair=list(pair), reason=reason)

    # what the routes need of the running service (service/routes.py: Served)
    def runtimes(self) -> dict[str, ModelRuntime]:
        return self.following.runtimes()

    def drift_report(self) -> dict[str, Any]:
        return self.drift.report()

    async def check_now(self, alias: str) -> None:
        await self.following.check_now(alias)

    async def reload(self) -> dict[str, Any]:
        return await self.following.reload()

    async def on_peer(self, event: dict[str, Any]) -> None:
        await self.following.on_peer(event)

    def start(self) -> None:
        """The worker's tasks: follow the registry, log the rollout, track drift, listen."""
        loop = asyncio.get_running_loop()
        self.server = lifecycle.server_stack(loop)
        log.info("HTTP: uvicorn on %s + %s", self.server["loop"], self.server["http"])
        tasks = {
            "poller": self.following.poll(),
            "fanout": self.bus.listen(self.following.on_event),
        }
        if self.rollout is not None:
            tasks["rollout"] = self.rollout.log_forever()
        if self.config.drift:
            tasks["drift"] = self.drift.watch()
        for name, work in tasks.items():
            self._tasks.append(asyncio.create_task(work, name=f"proto2prod-{name}"))
        lifecycle.drain_on_sigterm(loop, self.config.drain_s, self._start_draining)

    def _start_draining(self) -> bool:
        """`/readyz` says 503 from now on; False if it already did."""
        if self.draining:
            return False
        self.draining = True
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.answering.close()
        self.following.checks.close()


class Current:
    """The worker's `Serving` once BentoML has made the service (None before): the plain
    Starlette routes and the ASGI layers are built at import, before it exists."""

    serving: Serving | None = None
