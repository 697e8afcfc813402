"""The environment, read in one place.

Every part (registry, service, prototype, benchmarks) takes a `Settings` instead of calling
`os.getenv`, so tests pass `Settings.from_env({...})` rather than patching `os.environ`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from proto2prod.errors import SettingsError
from proto2prod.service_settings import MIN_SECRET_CHARS, ServiceSettings
from proto2prod.setting import environ_of, read, setting

__all__ = [
    "MIN_SECRET_CHARS",
    "PrototypeSettings",
    "ServiceSettings",
    "Settings",
    "SettingsError",
]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where proto2prod keeps its data and how it talks to the registry."""

    home: Path = setting(
        "PROTO2PROD_HOME",
        Path(".proto2prod"),
        "Data dir: the embedded MLflow store, its artifacts, the per-version cache, keys.json.",
        follows=lambda _: Path(".proto2prod").absolute(),
        follows_note="./.proto2prod",
    )
    tracking_uri: str | None = setting(
        "MLFLOW_TRACKING_URI",
        None,
        "The MLflow tracking server; unset: the embedded SQLite store under the data dir.",
    )
    registry_timeout_s: float = setting(
        "PROTO2PROD_REGISTRY_TIMEOUT_S",
        10.0,
        "Seconds per request to a tracking server (MLflow's own 120 s, retried, would "
        "freeze a CLI or a poller for minutes); sets MLflow's MLFLOW_HTTP_REQUEST_TIMEOUT.",
    )
    registry_retries: int = setting(
        "PROTO2PROD_REGISTRY_RETRIES", 2, "Retries of a failed request to a tracking server."
    )
    keys_file_set: Path | None = setting(
        "PROTO2PROD_KEYS_FILE",
        None,
        "The service's API keys; unset: keys.json in the data dir. Set, the service needs "
        "keys from it, whatever the file says.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls(**read(cls, os.environ if environ is None else environ))

    @property
    def keys_file(self) -> Path:
        """Where the API keys are: `PROTO2PROD_KEYS_FILE`, or `keys.json` in `home`."""
        return self.keys_file_set if self.keys_file_set is not None else self.home / "keys.json"

    @property
    def keys_required(self) -> bool:
        """`PROTO2PROD_KEYS_FILE` was set: a service needs keys from it."""
        return self.keys_file_set is not None

    def mlflow_environment(self) -> dict[str, str]:
        """MLflow's own variables for these registry settings.

        MLflow reads its timeouts from the environment on every request (its defaults, 120 s
        and 7 retries, would hang a CLI or a poller for minutes on a dead server). A library
        call never writes `os.environ`; our own processes apply this once at start-up
        (`proto2prod.startup.configure_process`), and our settings win over values a parent
        process left behind.
        """
        return {
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(math.ceil(self.registry_timeout_s)),  # an int
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.registry_retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }

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


@dataclass(frozen=True, kw_only=True)
class PrototypeSettings:
    """What a prototype UI shows (`PROTO2PROD_UI_*`; `proto2prod prototype` sets them).

    Streamlit runs its app as a script in its own process, so the CLI hands these over
    through the environment.
    """

    definition: str | None = setting(
        "PROTO2PROD_UI_DEFINITION", None, "The model definition (in-process mode)."
    )
    model: str | None = setting(
        "PROTO2PROD_UI_MODEL", None, "The registry reference for the weights; unset: train now."
    )
    weights: str | None = setting(
        "PROTO2PROD_UI_WEIGHTS", None, "A weights file trained elsewhere, instead of the registry."
    )
    backend: str | None = setting("PROTO2PROD_UI_BACKEND", None, "The service's URL (remote mode).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrototypeSettings:
        config = cls(**read(cls, os.environ if environ is None else environ))
        if config.backend is None and config.definition is None:
            raise SettingsError(
                "set PROTO2PROD_UI_DEFINITION (a model file, in-process) or "
                "PROTO2PROD_UI_BACKEND (the service URL); proto2prod prototype sets them"
            )
        return config

    def environ(self) -> dict[str, str]:
        """The variables that hand these settings to the UI's own process."""
        return environ_of(self)
