"""What both Locust files share: each process's figures gathered on the master and written
to `P2P_OUT` when Locust quits, so `--workers N` (master/worker, also across machines)
loses nothing."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import MasterRunner, WorkerRunner


def install(state: dict[str, Any], message: str, mine: Callable[[], dict[str, Any]]) -> None:
    """Listeners: `state["started"]` at the test's start, `mine()` sent as `message` from a
    worker (or kept, alone) at its stop, every process's figures written on quitting."""

    @events.test_start.add_listener
    def _start(environment: Any, **_: Any) -> None:
        state["started"] = time.monotonic()

    @events.init.add_listener
    def _init(environment: Any, **_: Any) -> None:
        if isinstance(environment.runner, MasterRunner):
            environment.runner.register_message(
                message, lambda msg, **__: state["collected"].append(msg.data)
            )

    @events.test_stop.add_listener
    def _stop(environment: Any, **_: Any) -> None:
        if isinstance(environment.runner, WorkerRunner):
            environment.runner.send_message(message, mine())
        else:
            state["collected"].append(mine())

    @events.quitting.add_listener
    def _quit(environment: Any, **_: Any) -> None:
        if isinstance(environment.runner, WorkerRunner) or not os.environ.get("P2P_OUT"):
            return
        Path(os.environ["P2P_OUT"]).write_text(json.dumps(state["collected"]))
