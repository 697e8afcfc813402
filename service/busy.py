"""How busy the service is: the signal a shadow yields to.

A shadow must cost the champion nothing, and "the model is idle" is not enough on its own:
for a small model the bound is the CPU (HTTP, JSON, validation on the event loop; the
forward pass and postprocessing beside it), and a shadow's extra work (its forward pass,
its outputs, the comparison) takes CPU too. So four times a second the service samples
two shares of the wall clock: the CPU time of the event loop's own thread
(`time.thread_time`, saturated at one core whatever the machine), and the CPU time of the
whole process over the cores it may run on (`time.process_time`, `sched_getaffinity`). A
shadow sample is taken only while both are below `BUSY`: under load the shadow is dropped
first (and counted) instead of slowing answers.
"""

from __future__ import annotations

import asyncio
import os
import time

BUSY = 0.8
"""The CPU share above which the service counts as busy."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Busy:
    """CPU shares of the latest interval: the event loop's thread, and the process."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.cores = _cores()
        self.loop_share = 0.0
        self.process_share = 0.0
        """Of all the cores this process may use."""

    @property
    def busy(self) -> bool:
        return max(self.loop_share, self.process_share) >= BUSY

    async def watch(self) -> None:
        """Run on the loop being measured, until cancelled."""
        while True:
            loop, process, wall = time.thread_time(), time.process_time(), time.perf_counter()
            await asyncio.sleep(self.interval_s)
            spent = time.perf_counter() - wall
            if spent > 0:
                self.loop_share = (time.thread_time() - loop) / spent
                self.process_share = (time.process_time() - process) / spent / self.cores
