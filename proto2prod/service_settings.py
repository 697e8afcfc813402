"""How the model service runs: its settings, each declared once (proto2prod/setting.py).

`proto2prod serve` sets them in the environment of BentoML's processes, which read them
with `ServiceSettings.from_env()`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proto2prod.errors import SettingsError
from proto2prod.setting import read, setting

MIN_SECRET_CHARS = 16
"""The shortest webhook secret accepted (a short one can be guessed from forged deliveries)."""


def _canary(key: str, raw: str) -> dict[str, Any]:
    """`ALIAS:PERCENT` (`challenger:10`) -> the canary's settings."""
    alias, sep, percent = raw.strip().rpartition(":")
    try:
        share = float(percent)
    except ValueError:
        share = -1.0
    if not sep or not alias or not 0 < share <= 100:
        raise SettingsError(
            f"{key}={raw!r}: give ALIAS:PERCENT with 0 < PERCENT <= 100, e.g. challenger:10"
        )
    return {"canary": alias, "canary_percent": share}


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """How the model service runs (all `PROTO2PROD_*`; `proto2prod serve` sets them)."""

    model: str = setting(
        "PROTO2PROD_MODEL",
        "",
        "The reference to serve, e.g. `digits@production` or `digits/3`.",
    )
    definition: str | None = setting(
        "PROTO2PROD_DEFINITION",
        None,
        "The installed definition to run (FILE.py[:Class] or module:Class); by default the entry "
        "point recorded when the version was published.",
    )
    poll_s: float = setting(
        "PROTO2PROD_POLL_S",
        10.0,
        "How often the alias is re-resolved.",
    )
    poll_max_s: float = setting(
        "PROTO2PROD_POLL_MAX_S",
        60.0,
        "The longest back-off while the registry is unreachable.",
        follows=lambda v: max(60.0, v["poll_s"]),
        follows_note="60, or PROTO2PROD_POLL_S if longer",
    )
    admin_token: str | None = setting(
        "PROTO2PROD_ADMIN_TOKEN",
        None,
        "Bearer token for /admin/reload (disabled when unset).",
        secret=True,
    )
    max_body_mb: float = setting(
        "PROTO2PROD_MAX_BODY_MB",
        16.0,
        "Larger request bodies get 413 before they are read whole.",
    )
    max_batch_size: int = setting(
        "PROTO2PROD_MAX_BATCH_SIZE",
        32,
        "Most items in one forward pass.",
        at_least=1,
    )
    batch_wait_ms: float = setting(
        "PROTO2PROD_BATCH_WAIT_MS",
        1.0,
        "How long a batch that is not full waits for company.",
        at_least=0,
    )
    max_queue: int = setting(
        "PROTO2PROD_MAX_QUEUE",
        1024,
        "Items waiting for the model past which requests get 503.",
        at_least=1,
    )
    max_concurrency: int = setting(
        "PROTO2PROD_MAX_CONCURRENCY",
        512,
        "`/predict` requests in the server at once; the next one gets 429 with `Retry-After`.",
        at_least=1,
    )
    timeout_s: float = setting(
        "PROTO2PROD_TIMEOUT_S",
        30.0,
        "A request not answered within this (validation, preprocessing and the model together, "
        "from a whole body) gets 504.",
    )
    max_items: int = setting(
        "PROTO2PROD_MAX_ITEMS",
        256,
        "Most items in one request (413 past it); at most PROTO2PROD_MAX_QUEUE, so an "
        "admitted request always fits an empty queue.",
        at_least=1,
        follows=lambda v: min(256, v["max_queue"]),
        follows_note="256, or PROTO2PROD_MAX_QUEUE if lower",
    )
    max_sequences: int = setting(
        "PROTO2PROD_MAX_SEQUENCES",
        32,
        "A generative model's sequences sharing each decoding step; more wait for a slot.",
        at_least=1,
    )
    max_waiting_sequences: int = setting(
        "PROTO2PROD_MAX_WAITING_SEQUENCES",
        256,
        "Sequences waiting for a decoding slot past which `/generate` gets 429 with `Retry-After`.",
        at_least=0,
    )
    max_new_tokens: int = setting(
        "PROTO2PROD_MAX_NEW_TOKENS",
        1024,
        "The most tokens one request may ask a generative model for (422 past it).",
        at_least=1,
    )
    generate_timeout_s: float = setting(
        "PROTO2PROD_GENERATE_TIMEOUT_S",
        120.0,
        "A `/generate` stream not finished within this (waiting and generating) ends with a "
        "504 error event, or gets 504 if it never started.",
    )
    body_timeout_s: float = setting(
        "PROTO2PROD_BODY_TIMEOUT_S",
        10.0,
        "A request body that has not fully arrived by then gets 408, so a slow sender loses its "
        "place.",
    )
    # Measured on JSON number arrays: 8 MB: +212 MB, 32 MB: +551 MB; 24 bodies of 3.9 MB
    # unbounded: +701 MB.
    max_inflight_mb: float = setting(
        "PROTO2PROD_MAX_INFLIGHT_MB",
        32.0,
        "Request body megabytes held by all requests together (503 with Retry-After past "
        "it); a worker's peak grows ~100 MB + ~14x this (parsed JSON arrays).",
        follows=lambda v: max(32.0, v["max_body_mb"]),
        follows_note="32, or PROTO2PROD_MAX_BODY_MB if higher",
    )
    device: str | None = setting(
        "PROTO2PROD_DEVICE",
        None,
        "The device: cpu, cuda, cuda:1...; unset: CUDA when available.",
    )
    require_gpu: bool = setting(
        "PROTO2PROD_REQUIRE_GPU",
        False,
        "Fail at start-up instead of falling back to the CPU.",
    )
    half: bool = setting(
        "PROTO2PROD_HALF",
        False,
        "Run the model in float16 on CUDA.",
    )
    torch_threads: int = setting(
        "PROTO2PROD_TORCH_THREADS",
        0,
        "The intra-op threads of torch (0: torch's default).",
    )
    access_log: bool = setting(
        "PROTO2PROD_ACCESS_LOG",
        False,
        "BentoML's per-request access log (costs CPU per request).",
    )
    drain_s: float = setting(
        "PROTO2PROD_DRAIN_S",
        2.0,
        "On SIGTERM, how long `/readyz` says 503 while requests are still served, so a load "
        "balancer stops sending before the server stops listening.",
        at_least=0,
    )
    workers: int = setting(
        "PROTO2PROD_WORKERS",
        1,
        "BentoML worker processes, each with the model, its own batcher and, with several GPUs, "
        "its own GPU (worker i on `cuda:(i-1) % gpus`). One worker saturates one GPU for most "
        "models; add workers for CPU-bound preprocessing.",
        at_least=1,
    )
    webhook_secret: str | None = setting(
        "PROTO2PROD_WEBHOOK_SECRET",
        None,
        "The secret MLflow signs its registry webhooks with; `POST /admin/registry-events` is "
        "disabled without it.",
        secret=True,
    )
    peers: str | None = setting(
        "PROTO2PROD_PEERS",
        None,
        "The other replicas behind the same load balancer: comma-separated base URLs, or one "
        "URL whose DNS name has every replica's address (a headless Service). A registry "
        "event or a canary rollback one replica gets, it tells them, signed with "
        "PROTO2PROD_WEBHOOK_SECRET (service/peers.py).",
    )
    shadow: str | None = setting(
        "PROTO2PROD_SHADOW",
        None,
        "An alias whose version also runs, after the champion has answered and only when the model"
        " is idle, on a sample of requests; the two are compared.",
    )
    shadow_rate: float = setting(
        "PROTO2PROD_SHADOW_RATE",
        0.1,
        "The share of requests (0 < rate <= 1) the shadow also runs.",
    )
    shadow_log_s: float = setting(
        "PROTO2PROD_SHADOW_LOG_S",
        60.0,
        "How often the shadow's comparison goes to MLflow.",
    )
    canary_log_s: float = setting(
        "PROTO2PROD_CANARY_LOG_S",
        60.0,
        "How often the canary's comparison goes to MLflow.",
    )
    canary: str | None = setting(
        "PROTO2PROD_CANARY",
        None,
        "ALIAS:PERCENT (e.g. challenger:10): that alias's version answers PERCENT % of "
        "requests, and loses them when it does worse than the champion.",
        parse=_canary,
    )
    canary_percent: float = setting(
        None,
        0.0,
        "The canary's share of requests in percent (`--canary ALIAS:PERCENT`).",
    )
    canary_window: int = setting(
        "PROTO2PROD_CANARY_WINDOW",
        200,
        "The latest requests per side the canary is judged on.",
        at_least=1,
    )
    canary_min_requests: int = setting(
        "PROTO2PROD_CANARY_MIN_REQUESTS",
        50,
        "Requests each side must have answered in the window before the canary is judged at all.",
        at_least=1,
    )
    canary_min_clients: int = setting(
        "PROTO2PROD_CANARY_MIN_CLIENTS",
        5,
        "Distinct clients (`X-Request-Key`, else address) each side must have answered before the "
        "canary is judged: one client cannot decide it.",
        at_least=1,
    )
    canary_max_error_delta: float = setting(
        "PROTO2PROD_CANARY_MAX_ERROR_DELTA",
        0.02,
        "The canary is rolled back when its error rate (5xx answers) exceeds the "
        "champion's by more than this (0.02: 2 percentage points).",
        at_least=0,
    )
    canary_max_p99_ratio: float = setting(
        "PROTO2PROD_CANARY_MAX_P99_RATIO",
        1.5,
        "The canary is rolled back when its p99 latency exceeds the champion's times this.",
    )
    drift: bool = setting(
        "PROTO2PROD_DRIFT",
        True,
        "Track live statistics against the version's reference.",
    )
    drift_window: int = setting(
        "PROTO2PROD_DRIFT_WINDOW",
        1000,
        "Live values kept per statistic (and items per MLflow log).",
        at_least=1,
    )
    no_auth: bool = setting(
        "PROTO2PROD_NO_AUTH",
        False,
        "Allow listening beyond loopback without API keys (`serve --no-auth` sets it); without it "
        "the service refuses to start exposed and open.",
    )

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise SettingsError(
                "PROTO2PROD_MODEL is not set; run: proto2prod serve NAME@ALIAS "
                "(or set PROTO2PROD_MODEL=digits@production)"
            )
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
        if self.peers is not None:
            self.peer_urls  # noqa: B018 (raises SettingsError when malformed)
            if self.webhook_secret is None:
                raise SettingsError(
                    "PROTO2PROD_PEERS needs PROTO2PROD_WEBHOOK_SECRET: replicas sign what "
                    "they tell each other with it (give every replica the same one)"
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
    def peer_urls(self) -> list[str]:
        """`PROTO2PROD_PEERS` as base URLs without a trailing slash (empty when unset)."""
        urls = [part.strip().rstrip("/") for part in (self.peers or "").split(",")]
        for url in filter(None, urls):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(
                    f"PROTO2PROD_PEERS: {url!r} is not a base URL; give http://HOST:PORT, "
                    f"comma-separated, or one http://NAME:PORT whose DNS name has every "
                    f"replica's address"
                )
        return list(filter(None, urls))

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
        return cls(**read(cls, os.environ if environ is None else environ))

    @property
    def challenger(self) -> str | None:
        """The alias of the second version the service runs (shadow or canary), if any."""
        return self.shadow or self.canary
