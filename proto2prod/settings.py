"""The environment, read in one place.

Every part (registry, service, prototype, benchmarks) takes a `Settings` instead of calling
`os.getenv`, so tests pass `Settings.from_env({...})` rather than patching `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _float(environ: Mapping[str, str], key: str, default: float) -> float:
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a number; set it to e.g. {default}") from None
    if value <= 0:
        raise SettingsError(f"{key}={raw!r} must be > 0")
    return value


def _int(environ: Mapping[str, str], key: str, default: int) -> int:
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not an integer; set it to e.g. {default}") from None
    if value < 0:
        raise SettingsError(f"{key}={raw!r} must be >= 0")
    return value


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where proto2prod keeps its data and how it talks to the registry."""

    home: Path
    """Data dir: embedded MLflow store, artifacts, the per-version cache (`PROTO2PROD_HOME`)."""
    tracking_uri: str | None
    """`MLFLOW_TRACKING_URI`; None means the embedded SQLite store under `home`."""
    registry_timeout_s: float = 10.0
    """Per-request timeout towards a tracking server (`PROTO2PROD_REGISTRY_TIMEOUT_S`).
    MLflow's own default (120 s, retried) would freeze a CLI or a poller for minutes."""
    registry_retries: int = 2
    """Retries towards a tracking server (`PROTO2PROD_REGISTRY_RETRIES`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("PROTO2PROD_HOME") or ".proto2prod").expanduser().absolute()
        return cls(
            home=home,
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            registry_timeout_s=_float(env, "PROTO2PROD_REGISTRY_TIMEOUT_S", 10.0),
            registry_retries=_int(env, "PROTO2PROD_REGISTRY_RETRIES", 2),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def embedded(self) -> bool:
        """True when the registry is the local SQLite store under `home`."""
        return self.tracking_uri is None

    @property
    def effective_tracking_uri(self) -> str:
        if self.tracking_uri is not None:
            return self.tracking_uri
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.home / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"
