"""What proto2prod's own processes (the CLI, the service) set once, at start-up.

A library leaves its caller's process alone: `Registry`, `publish` and the service's runtime
write nothing to `os.environ` and leave MLflow's global tracking URI as they found it. A
process that proto2prod itself starts is ours to configure, here, in one place.
"""

from __future__ import annotations

import logging
import os

from proto2prod.settings import Settings


def configure_process(settings: Settings, *, serving: bool = False) -> None:
    """Apply the registry's timeouts to MLflow and quieten its INFO lines (our CLI prints one
    line per outcome); `serving` also forbids MLflow to deserialise pickle (the service loads
    only safetensors, and says so to MLflow for anything that would load through it)."""
    os.environ.update(settings.mlflow_environment())
    # MLflow sets its logger's level when it is imported, from this variable; where it is
    # imported already, the level is set directly.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if serving:
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
