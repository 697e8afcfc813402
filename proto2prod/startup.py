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
    """Apply the registry's timeouts to MLflow and quieten its logger (our CLI prints one line
    per outcome); `serving` also forbids MLflow to deserialise pickle (the service loads
    only safetensors, and says so to MLflow for anything that would load through it) and
    sends proto2prod's log lines to stderr beside BentoML's."""
    os.environ.update(settings.mlflow_environment())
    # Every MLflow failure reaches the person as our own one line (the CLI) or log line (the
    # service); MLflow's logger would print it first with a 60-80 line traceback. It sets its
    # level when imported, from this variable (a user's own setting wins); where it is
    # imported already, the level is set directly.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    if serving:
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
        ours = logging.getLogger("proto2prod")
        if not ours.handlers:  # BentoML configures only its own loggers
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s [%(levelname)s] [%(name)s] %(message)s")
            )
            ours.addHandler(handler)
            ours.setLevel(logging.INFO)
