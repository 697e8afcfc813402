"""Start `proto2prod serve` (a real `bentoml serve`) on a free port for tests."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from proto2prod import Definition, Settings, Trained
from proto2prod.registry import Registry, publish
from tests.conftest import BIN
from tests.processes import free_port, server

ADMIN_TOKEN = "test-admin-token"


def published(home: Path, definition: Definition, trained: Trained) -> tuple[Registry, str]:
    """An embedded registry at `home` holding `trained` as NAME@production, and its version."""
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))
    return registry, publish(registry, definition, trained, alias="production").version


SLEEPY = Path(__file__).with_name("sleepy_model.py")


def sleepy_versions(home: Path, **delays: float) -> tuple[Registry, dict[str, str]]:
    """The sleepy model (tests/sleepy_model.py) published once per alias in an embedded
    registry at `home`, each version's forward pass waiting its `delay` seconds more:
    `sleepy_versions(home, production=0, challenger=0.05)` -> registry, {alias: version}."""
    import torch

    from proto2prod import NullProgress, load_definition

    sleepy = load_definition(SLEEPY)
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))
    fast = sleepy.model.train(NullProgress(), quick=True)
    versions = {}
    for alias, delay in delays.items():
        trained = Trained(weights={**fast.weights, "delay": torch.tensor([delay])}, metrics={})
        versions[alias] = publish(registry, sleepy, trained, alias=alias).version
    return registry, versions


def deliver(
    url: str, body: bytes, *, secret: str, delivery_id: str | None = None, at: float | None = None
) -> httpx.Response:
    """POST `body` to the service's webhook receiver, signed as MLflow signs a delivery."""
    from proto2prod.service import webhooks

    delivery_id = delivery_id or uuid.uuid4().hex
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": webhooks.sign(secret, delivery_id, timestamp, body),
        "Content-Type": "application/json",
    }
    return httpx.post(f"{url}/admin/registry-events", content=body, headers=headers, timeout=10)


def environment(home: Path, tracking_uri: str | None = None, **env: str) -> dict[str, str]:
    environ = {
        **os.environ,
        "PROTO2PROD_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "PATH": f"{BIN}:{os.environ['PATH']}",
        **env,
    }
    environ.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return environ


@contextmanager
def running_prototype(
    home: Path, args: Sequence[str], log: Path, *, health: str = "/", **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`proto2prod prototype ARGS` on a free port, once `health` answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "proto2prod"), "prototype", *args, "--port", str(port)]
    environ = environment(home, **env)
    with server(argv, f"{url}{health}", log, env=environ, timeout=150) as proc:
        yield url, proc


@contextmanager
def running_prototypes(
    home: Path, arg_lists: Sequence[Sequence[str]], folder: Path
) -> Iterator[list[str]]:
    """Several `proto2prod prototype ARGS` started at once (each imports Gradio for seconds:
    started together they wait once), their URLs once each answers 200."""
    from proto2prod.processes import kill, spawn, wait_http

    started = []
    try:
        for i, args in enumerate(arg_lists):
            url = f"http://127.0.0.1:{free_port()}"
            argv = [str(BIN / "proto2prod"), "prototype", *args, "--port", url.rsplit(":", 1)[1]]
            log = folder / f"prototype-{i}.log"
            started.append((url, spawn(argv, log, environment(home), None), log))
        for url, proc, log in started:
            wait_http(f"{url}/", proc, log, 150)
        yield [url for url, _, _ in started]
    finally:
        for _, proc, _ in started:
            kill(proc, 10)


@contextmanager
def running_service(
    home: Path, ref: str, log: Path, *, tracking_uri: str | None = None, **env: str
) -> Iterator[str]:
    """Yield the base URL of a service for `ref` once `/readyz` answers 200."""
    with running_service_process(home, ref, log, tracking_uri=tracking_uri, **env) as (url, _):
        yield url


@contextmanager
def running_service_process(
    home: Path, ref: str, log: Path, *, tracking_uri: str | None = None, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The service for `ref` and its process, once `/readyz` answers 200."""
    port = free_port()
    defaults = {
        "PROTO2PROD_POLL_S": "1",
        "PROTO2PROD_POLL_MAX_S": "2",
        "PROTO2PROD_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROTO2PROD_REGISTRY_TIMEOUT_S": "3",
        "PROTO2PROD_REGISTRY_RETRIES": "0",
        "PROTO2PROD_DRAIN_S": "0",  # tests stop services often; the drain test sets it
    }
    environ = environment(home, tracking_uri, **{**defaults, **env})
    url = f"http://127.0.0.1:{port}"
    args = [str(BIN / "proto2prod"), "serve", ref, "--port", str(port)]
    with server(args, f"{url}/readyz", log, env=environ, timeout=150) as proc:
        yield url, proc


def cli(
    home: Path, *args: str, tracking_uri: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`proto2prod ARGS` against the registry at `home` (or `tracking_uri`)."""
    return subprocess.run(
        [str(BIN / "proto2prod"), *args],
        env=environment(home, tracking_uri, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """What `check()` returns once it is truthy; AssertionError naming `what` past timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")
