"""Start `proto2prod serve` (a real `bentoml serve`) on a free port for tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import BIN
from tests.processes import free_port, server

ADMIN_TOKEN = "test-admin-token"


@contextmanager
def running_service(
    home: Path, ref: str, log: Path, *, tracking_uri: str | None = None, **env: str
) -> Iterator[str]:
    """Yield the base URL of a service for `ref` once `/readyz` answers 200."""
    port = free_port()
    environ = {
        **os.environ,
        "PROTO2PROD_HOME": str(home),
        "PROTO2PROD_POLL_S": "1",
        "PROTO2PROD_POLL_MAX_S": "2",
        "PROTO2PROD_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROTO2PROD_REGISTRY_TIMEOUT_S": "3",
        "PROTO2PROD_REGISTRY_RETRIES": "0",
        "BENTOML_DO_NOT_TRACK": "true",
        "PATH": f"{BIN}:{os.environ['PATH']}",
        **env,
    }
    environ.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        environ["MLFLOW_TRACKING_URI"] = tracking_uri
    url = f"http://127.0.0.1:{port}"
    args = [str(BIN / "proto2prod"), "serve", ref, "--port", str(port)]
    with server(args, f"{url}/readyz", log, env=environ, timeout=150):
        yield url
