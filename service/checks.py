"""Registry checks: guarded, coalesced per alias, on threads of their own.

A check (resolve the alias, fetch, verify, load, warm up, swap) can take as long as the
registry's timeout. Many things ask for one: the poll, every webhook delivery, another
worker's news, `/admin/reload`. So per alias at most one check runs and one more is pending
(asked for while one ran: the registry may have moved since it started), however many ask;
and they run on an executor of their own, so a hung registry never takes the threads that
parse and prepare requests. No failure escapes: each is logged in one line (a traceback
only for what is our own bug or the definition's), counted on the runtime, and retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from proto2prod.errors import CacheUnavailable, RegistryUnavailable
from proto2prod.service.runtime import ModelRuntime

log = logging.getLogger("proto2prod.service")

T = TypeVar("T")


class RegistryChecks:
    """The checks of the aliases `runtimes()` follows (alias -> its runtime)."""

    def __init__(self, runtimes: Callable[[], dict[str, ModelRuntime]]) -> None:
        self.runtimes = runtimes
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="registry")
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def schedule(self, alias: str, why: str) -> asyncio.Task[None] | None:
        """The check of `alias`: the one running (another is then pending), or a new one;
        None for an alias not followed here."""
        runtime = self.runtimes().get(alias)
        if runtime is None:
            return None
        running = self._running.get(alias)
        if running is not None:
            self._again.add(alias)
            return running

        async def checking() -> None:
            try:
                while True:
                    self._again.discard(alias)
                    await self.guarded(runtime, runtime.check, why)
                    if alias not in self._again:
                        return
            finally:
                self._running.pop(alias, None)

        task = asyncio.create_task(checking(), name=f"proto2prod-check-{alias}")
        self._running[alias] = task
        return task

    async def run(self, step: Callable[[], T]) -> T:
        """`step` on the registry's threads (a forced reload, whose result is answered)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, step)

    async def guarded(self, runtime: ModelRuntime, step: Callable[[], Any], what: str) -> None:
        """`step` on the registry's threads; any failure logged and counted, never raised."""
        try:
            await self.run(step)
        except (RegistryUnavailable, CacheUnavailable) as exc:  # counted by the runtime
            log.warning(
                "%s failed (%d in a row; next in %.0f s): %s",
                what,
                runtime.failures,
                runtime.next_poll_in(),
                exc,
            )
        except Exception as exc:  # our own bug, or the user's definition: keep going
            runtime.failed(what, exc)  # the runtime keeps its own error accounting
            log.exception("%s failed (%d in a row); retrying", what, runtime.failures)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
