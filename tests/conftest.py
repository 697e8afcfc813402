"""Shared fixtures: trained example models, registries (embedded and a real mlflow server)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto2prod import Definition, NullProgress, Settings, Trained, load_definition
from tests.processes import free_port, mlflow_server_args, server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def digits() -> Definition:
    return load_definition(EXAMPLES / "digits.py")


@pytest.fixture(scope="session")
def digits_trained(digits: Definition) -> Trained:
    """The full training (seconds on CPU): the accuracy tests need the real thing."""
    return digits.model.train(NullProgress())


@pytest.fixture(scope="session")
def digits_quick(digits: Definition) -> Trained:
    return digits.model.train(NullProgress(), quick=True)


WEBHOOK_DELIVERY = {
    # What a tracking server needs to deliver webhooks to a service on loopback (README),
    # besides a Fernet key for the secrets it stores.
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",  # a webhook created by a test is used at once
}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (SQLite behind it, artifacts served) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    args = mlflow_server_args(port, f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")
    from cryptography.fernet import Fernet  # MLflow's dependency: it encrypts webhook secrets

    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        **WEBHOOK_DELIVERY,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    url = f"http://127.0.0.1:{port}"
    with server(args, f"{url}/health", root / "server.log", env=env, timeout=120):
        yield url


@pytest.fixture(params=["embedded", "server"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a fresh registry: the embedded SQLite store, or a real mlflow server."""
    env = {"PROTO2PROD_HOME": str(tmp_path / "home")}
    if request.param == "server":
        env["MLFLOW_TRACKING_URI"] = request.getfixturevalue("mlflow_server")
    return Settings.from_env(env)


@pytest.fixture
def embedded(tmp_path: Path) -> Settings:
    return Settings.from_env({"PROTO2PROD_HOME": str(tmp_path / "home")})
