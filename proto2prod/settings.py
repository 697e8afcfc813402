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
from typing import Any

from proto2prod.errors import SettingsError

__all__ = ["PrototypeSettings", "ServiceSettings", "Settings", "SettingsError"]


MIN_SECRET_CHARS = 16
"""The shortest webhook secret accepted (a short one can be guessed from forged deliveries)."""


def _float(environ: Mapping[str, str], key: str, default: float, *, zero_ok: bool = False) -> float:
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a number; set it to e.g. {default}") from None
    if value < 0 or (value == 0 and not zero_ok) or value != value:
        raise SettingsError(f"{key}={raw!r} must be {'>=' if zero_ok else '>'} 0")
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
    MLflow's own default (120 s, retried) would freeze a CLI or a poller for minutes; this
    sets MLflow's `MLFLOW_HTTP_REQUEST_TIMEOUT` (and retries its `..._MAX_RETRIES`)."""
    registry_retries: int = 2
    """Retries towards a tracking server (`PROTO2PROD_REGISTRY_RETRIES`)."""
    keys_file: Path | None = None
    """The service's API keys (`PROTO2PROD_KEYS_FILE`; by default `keys.json` in `home`)."""
    keys_required: bool = False
    """`PROTO2PROD_KEYS_FILE` was set: a service needs keys from it, whatever the file says."""

    def __post_init__(self) -> None:
        if self.keys_file is None:
            object.__setattr__(self, "keys_file", self.home / "keys.json")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("PROTO2PROD_HOME") or ".proto2prod").expanduser().absolute()
        return cls(
            home=home,
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            registry_timeout_s=_float(env, "PROTO2PROD_REGISTRY_TIMEOUT_S", 10.0),
            registry_retries=_int(env, "PROTO2PROD_REGISTRY_RETRIES", 2),
            keys_file=Path(env["PROTO2PROD_KEYS_FILE"]).expanduser().absolute()
            if env.get("PROTO2PROD_KEYS_FILE")
            else None,
            keys_required=bool(env.get("PROTO2PROD_KEYS_FILE")),
        )

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


def _positive_int(environ: Mapping[str, str], key: str, default: int) -> int:
    value = _int(environ, key, default)
    if value < 1:
        raise SettingsError(f"{key}={value} must be >= 1")
    return value


def _bool(environ: Mapping[str, str], key: str, default: bool) -> bool:
    raw = (environ.get(key) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{key}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """How the model service runs (all `PROTO2PROD_*`; `proto2prod serve` sets them)."""

    model: str
    """`PROTO2PROD_MODEL`: the reference to serve, e.g. `digits@production` or `digits/3`."""
    definition: str | None = None
    """`PROTO2PROD_DEFINITION`: the installed definition to run (FILE.py[:Class] or
    module:Class); by default the entry point recorded when the version was published."""
    poll_s: float = 10.0
    """`PROTO2PROD_POLL_S`: how often the alias is re-resolved."""
    poll_max_s: float = 60.0
    """`PROTO2PROD_POLL_MAX_S`: the longest back-off while the registry is unreachable."""
    admin_token: str | None = None
    """`PROTO2PROD_ADMIN_TOKEN`: bearer token for /admin/reload (disabled when unset)."""
    max_body_mb: float = 16.0
    """`PROTO2PROD_MAX_BODY_MB`: larger request bodies get 413 before they are read whole."""
    max_batch_size: int = 32
    """`PROTO2PROD_MAX_BATCH_SIZE`: most items in one forward pass."""
    batch_wait_ms: float = 1.0
    """`PROTO2PROD_BATCH_WAIT_MS`: how long a batch that is not full waits for company."""
    max_queue: int = 1024
    """`PROTO2PROD_MAX_QUEUE`: items waiting for the model past which requests get 503."""
    max_concurrency: int = 512
    """`PROTO2PROD_MAX_CONCURRENCY`: `/predict` requests in the server at once; the next
    one gets 429 with `Retry-After`."""
    timeout_s: float = 30.0
    """`PROTO2PROD_TIMEOUT_S`: a request not answered within this (validation, preprocessing
    and the model together, from a whole body) gets 504."""
    max_items: int = 256
    """`PROTO2PROD_MAX_ITEMS`: most items in one request (413 past it); at most `max_queue`,
    so an admitted request always fits an empty queue (unset: 256, or `max_queue` if lower)."""
    body_timeout_s: float = 10.0
    """`PROTO2PROD_BODY_TIMEOUT_S`: a request body that has not fully arrived by then gets
    408, so a slow sender loses its place."""
    max_inflight_mb: float = 32.0
    """`PROTO2PROD_MAX_INFLIGHT_MB`: request body bytes held by all requests together (503
    with Retry-After past it). Parsed JSON and its arrays take far more than their text:
    measured on JSON number arrays, a worker's peak grew ~100 MB + ~14x this figure (8 MB:
    +212 MB, 32 MB: +551 MB; 24 bodies of 3.9 MB unbounded: +701 MB)."""
    device: str | None = None
    """`PROTO2PROD_DEVICE`: cpu, cuda, cuda:1...; by default CUDA when available."""
    require_gpu: bool = False
    """`PROTO2PROD_REQUIRE_GPU`: fail at start-up instead of falling back to the CPU."""
    half: bool = False
    """`PROTO2PROD_HALF`: float16 on CUDA."""
    torch_threads: int = 0
    """`PROTO2PROD_TORCH_THREADS`: torch intra-op threads (0: torch's default)."""
    access_log: bool = False
    """`PROTO2PROD_ACCESS_LOG`: BentoML's per-request access log (costs CPU per request)."""
    drain_s: float = 2.0
    """`PROTO2PROD_DRAIN_S`: on SIGTERM, how long `/readyz` says 503 while requests are
    still served, so a load balancer stops sending before the server stops listening."""
    workers: int = 1
    """`PROTO2PROD_WORKERS`: BentoML worker processes, each with the model, its own batcher
    and, with several GPUs, its own GPU (worker i on `cuda:(i-1) % gpus`). One worker
    saturates one GPU for most models; add workers for CPU-bound preprocessing."""
    webhook_secret: str | None = None
    """`PROTO2PROD_WEBHOOK_SECRET`: the secret MLflow signs its registry webhooks with;
    `POST /admin/registry-events` is disabled without it."""
    shadow: str | None = None
    """`PROTO2PROD_SHADOW`: an alias whose version also runs, after the champion has
    answered and only when the model is idle, on a sample of requests; the two are compared."""
    shadow_rate: float = 0.1
    """`PROTO2PROD_SHADOW_RATE`: the share of requests (0 < rate <= 1) the shadow also runs."""
    shadow_log_s: float = 60.0
    """`PROTO2PROD_SHADOW_LOG_S`: how often the shadow or canary comparison goes to MLflow."""
    canary: str | None = None
    """`PROTO2PROD_CANARY`: an alias whose version answers `canary_percent` % of requests."""
    canary_percent: float = 0.0
    """The canary's share of requests in percent (`--canary ALIAS:PERCENT`)."""
    canary_window: int = 200
    """`PROTO2PROD_CANARY_WINDOW`: the latest requests per side the canary is judged on."""
    canary_min_requests: int = 50
    """`PROTO2PROD_CANARY_MIN_REQUESTS`: requests each side must have answered in the window
    before the canary is judged at all."""
    canary_min_clients: int = 5
    """`PROTO2PROD_CANARY_MIN_CLIENTS`: distinct clients (`X-Request-Key`, else address) each
    side must have answered before the canary is judged: one client cannot decide it."""
    canary_max_error_delta: float = 0.02
    """`PROTO2PROD_CANARY_MAX_ERROR_DELTA`: the canary is rolled back when its error rate
    (5xx answers) exceeds the champion's by more than this (0.02: 2 percentage points)."""
    canary_max_p99_ratio: float = 1.5
    """`PROTO2PROD_CANARY_MAX_P99_RATIO`: ... or when its p99 latency exceeds the champion's
    times this."""
    drift: bool = True
    """`PROTO2PROD_DRIFT`: track live statistics against the version's reference."""
    drift_window: int = 1000
    """`PROTO2PROD_DRIFT_WINDOW`: live values kept per statistic (and items per MLflow log)."""
    no_auth: bool = False
    """`PROTO2PROD_NO_AUTH`: allow listening beyond loopback without API keys (`serve
    --no-auth` sets it); without it the service refuses to start exposed and open."""

    def __post_init__(self) -> None:
        if self.poll_max_s < self.poll_s:
            raise SettingsError(
                f"PROTO2PROD_POLL_MAX_S={self.poll_max_s:g} is less than PROTO2PROD_POLL_S="
                f"{self.poll_s:g}: the back-off could never reach the normal interval; raise "
                f"the first or lower the second"
            )
        if self.max_items > self.max_queue:
            raise SettingsError(
                f"PROTO2PROD_MAX_ITEMS={self.max_items} is more than PROTO2PROD_MAX_QUEUE="
                f"{self.max_queue}: such a request could never be queued; lower the first or "
                f"raise the second"
            )
        if self.max_inflight_mb < self.max_body_mb:
            raise SettingsError(
                f"PROTO2PROD_MAX_INFLIGHT_MB={self.max_inflight_mb:g} is less than "
                f"PROTO2PROD_MAX_BODY_MB={self.max_body_mb:g}: a body under the limit could "
                f"never be held; raise the first or lower the second"
            )
        if not 0 < self.shadow_rate <= 1:
            raise SettingsError(
                f"PROTO2PROD_SHADOW_RATE={self.shadow_rate:g}: give a share of requests, "
                f"0 < rate <= 1 (0.1: one request in ten)"
            )
        if self.webhook_secret is not None and len(self.webhook_secret) < MIN_SECRET_CHARS:
            raise SettingsError(
                f"PROTO2PROD_WEBHOOK_SECRET has {len(self.webhook_secret)} characters; use at "
                f"least {MIN_SECRET_CHARS} random ones (python -c 'import secrets; "
                f"print(secrets.token_urlsafe(32))')"
            )
        if self.shadow and self.canary:
            raise SettingsError(
                "give either a shadow (PROTO2PROD_SHADOW) or a canary (PROTO2PROD_CANARY), "
                "not both: run the shadow first, then the canary"
            )
        served = self.model.rpartition("@")[2] if "@" in self.model else None
        for alias in (self.shadow, self.canary):
            if alias is not None and alias == served:
                raise SettingsError(
                    f"the shadow or canary alias '{alias}' is the alias being served; "
                    f"name the challenger's alias (e.g. challenger)"
                )

    @property
    def wants_gpu(self) -> bool:
        """Declare a GPU to the scheduler: asked for, or the machine has an NVIDIA GPU (the
        device default). Read from the driver, not torch: BentoML's arbiter evaluates this
        and should not import torch for it."""
        if self.require_gpu or (self.device or "").startswith("cuda"):
            return True
        if self.device:
            return False
        return self.gpu_count > 0

    @property
    def gpu_count(self) -> int:
        """NVIDIA GPUs the driver lists (0 without one): BentoML is told to make them all
        visible to every worker, which then picks its own."""
        gpus = Path("/proc/driver/nvidia/gpus")
        return sum(1 for _ in gpus.iterdir()) if gpus.is_dir() else 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        model = env.get("PROTO2PROD_MODEL", "").strip()
        if not model:
            raise SettingsError(
                "PROTO2PROD_MODEL is not set; run: proto2prod serve NAME@ALIAS "
                "(or set PROTO2PROD_MODEL=digits@production)"
            )
        max_queue = _positive_int(env, "PROTO2PROD_MAX_QUEUE", 1024)
        poll_s = _float(env, "PROTO2PROD_POLL_S", 10.0)
        max_body_mb = _float(env, "PROTO2PROD_MAX_BODY_MB", 16.0)
        return cls(
            model=model,
            definition=env.get("PROTO2PROD_DEFINITION") or None,
            poll_s=poll_s,
            # unset, the back-off bound follows a longer poll; set, it must fit (checked below)
            poll_max_s=_float(env, "PROTO2PROD_POLL_MAX_S", max(60.0, poll_s)),
            admin_token=env.get("PROTO2PROD_ADMIN_TOKEN") or None,
            max_body_mb=max_body_mb,
            max_batch_size=_positive_int(env, "PROTO2PROD_MAX_BATCH_SIZE", 32),
            batch_wait_ms=_float(env, "PROTO2PROD_BATCH_WAIT_MS", 1.0, zero_ok=True),
            max_queue=max_queue,
            max_concurrency=_positive_int(env, "PROTO2PROD_MAX_CONCURRENCY", 512),
            timeout_s=_float(env, "PROTO2PROD_TIMEOUT_S", 30.0),
            # unset, it follows a lowered queue bound; set, it must fit (checked below)
            max_items=_positive_int(env, "PROTO2PROD_MAX_ITEMS", min(256, max_queue)),
            body_timeout_s=_float(env, "PROTO2PROD_BODY_TIMEOUT_S", 10.0),
            max_inflight_mb=_float(env, "PROTO2PROD_MAX_INFLIGHT_MB", max(32.0, max_body_mb)),
            device=env.get("PROTO2PROD_DEVICE") or None,
            require_gpu=_bool(env, "PROTO2PROD_REQUIRE_GPU", False),
            half=_bool(env, "PROTO2PROD_HALF", False),
            torch_threads=_int(env, "PROTO2PROD_TORCH_THREADS", 0),
            access_log=_bool(env, "PROTO2PROD_ACCESS_LOG", False),
            drain_s=_float(env, "PROTO2PROD_DRAIN_S", 2.0, zero_ok=True),
            workers=_positive_int(env, "PROTO2PROD_WORKERS", 1),
            webhook_secret=env.get("PROTO2PROD_WEBHOOK_SECRET") or None,
            shadow=env.get("PROTO2PROD_SHADOW") or None,
            shadow_rate=_float(env, "PROTO2PROD_SHADOW_RATE", 0.1),
            shadow_log_s=_float(env, "PROTO2PROD_SHADOW_LOG_S", 60.0),
            **_canary(env.get("PROTO2PROD_CANARY") or ""),
            canary_window=_positive_int(env, "PROTO2PROD_CANARY_WINDOW", 200),
            canary_min_requests=_positive_int(env, "PROTO2PROD_CANARY_MIN_REQUESTS", 50),
            canary_min_clients=_positive_int(env, "PROTO2PROD_CANARY_MIN_CLIENTS", 5),
            canary_max_error_delta=_float(
                env, "PROTO2PROD_CANARY_MAX_ERROR_DELTA", 0.02, zero_ok=True
            ),
            canary_max_p99_ratio=_float(env, "PROTO2PROD_CANARY_MAX_P99_RATIO", 1.5),
            drift=_bool(env, "PROTO2PROD_DRIFT", True),
            drift_window=_positive_int(env, "PROTO2PROD_DRIFT_WINDOW", 1000),
            no_auth=_bool(env, "PROTO2PROD_NO_AUTH", False),
        )

    @property
    def challenger(self) -> str | None:
        """The alias of the second version the service runs (shadow or canary), if any."""
        return self.shadow or self.canary


def _canary(raw: str) -> dict[str, Any]:
    """`ALIAS:PERCENT` (`challenger:10`) -> the canary's settings; empty: no canary."""
    if not raw.strip():
        return {}
    alias, sep, percent = raw.strip().rpartition(":")
    try:
        share = float(percent)
    except ValueError:
        share = -1.0
    if not sep or not alias or not 0 < share <= 100:
        raise SettingsError(
            f"PROTO2PROD_CANARY={raw!r}: give ALIAS:PERCENT with 0 < PERCENT <= 100, "
            f"e.g. challenger:10"
        )
    return {"canary": alias, "canary_percent": share}


@dataclass(frozen=True, kw_only=True)
class PrototypeSettings:
    """What a prototype UI shows (`PROTO2PROD_UI_*`; `proto2prod prototype` sets them).

    Streamlit runs its app as a script in its own process, so the CLI hands these over
    through the environment.
    """

    definition: str | None = None
    """`PROTO2PROD_UI_DEFINITION`: the model definition (in-process mode)."""
    model: str | None = None
    """`PROTO2PROD_UI_MODEL`: registry reference for the weights; unset: train now."""
    weights: str | None = None
    """`PROTO2PROD_UI_WEIGHTS`: a weights file trained elsewhere, instead of the registry."""
    backend: str | None = None
    """`PROTO2PROD_UI_BACKEND`: the service's URL (remote mode)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrototypeSettings:
        env = os.environ if environ is None else environ
        config = cls(
            definition=env.get("PROTO2PROD_UI_DEFINITION") or None,
            model=env.get("PROTO2PROD_UI_MODEL") or None,
            weights=env.get("PROTO2PROD_UI_WEIGHTS") or None,
            backend=env.get("PROTO2PROD_UI_BACKEND") or None,
        )
        if config.backend is None and config.definition is None:
            raise SettingsError(
                "set PROTO2PROD_UI_DEFINITION (a model file, in-process) or "
                "PROTO2PROD_UI_BACKEND (the service URL); proto2prod prototype sets them"
            )
        return config

    def environ(self) -> dict[str, str]:
        pairs = {
            "PROTO2PROD_UI_DEFINITION": self.definition,
            "PROTO2PROD_UI_MODEL": self.model,
            "PROTO2PROD_UI_WEIGHTS": self.weights,
            "PROTO2PROD_UI_BACKEND": self.backend,
        }
        return {k: v for k, v in pairs.items() if v}
