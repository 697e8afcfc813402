"""The service's own Prometheus metrics, beside BentoML's (all at `/metrics`)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import bentoml

BATCH_SIZE = bentoml.metrics.Histogram(
    name="proto2prod_batch_size",
    documentation="Items per forward pass",
    labelnames=["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
REQUESTS = bentoml.metrics.Counter(
    name="proto2prod_requests",
    documentation="Prediction requests by model version and HTTP status",
    labelnames=["model", "version", "status"],
)


_CHILDREN: dict[tuple[Any, ...], Any] = {}
"""Each metric's child per label values, looked up once: `labels()` validates and locks on
every call, a cost per request."""


def _child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)` (in the order of its label names), once."""
    key = (id(metric), *values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child


def count_request(model: str, version: str, status: int) -> None:
    with contextlib.suppress(Exception):  # metrics must never fail a request
        _child(REQUESTS, model, version, str(status)).inc()


def record_batch(model: str, version: str, size: int) -> None:
    with contextlib.suppress(Exception):
        _child(BATCH_SIZE, model, version).observe(size)


DRIFT_PSI = bentoml.metrics.Gauge(
    name="proto2prod_drift_psi",
    documentation="Population Stability Index of live traffic against the version's reference",
    labelnames=["model", "version", "statistic"],
    # a gauge of live workers only: a killed worker's last values must not stay in /metrics
    multiprocess_mode="livemax",
)


def forget_dead_workers() -> None:
    """Remove the live-gauge files of workers that are gone (killed: nothing of theirs ran
    to say so), so their drift values leave `/metrics`."""
    from prometheus_client import multiprocess

    from proto2prod.service.launch import alive

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder or not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith("gauge_live") and name.endswith(".db"):
            pid = name[: -len(".db")].rpartition("_")[2]
            if pid.isdigit() and not alive(int(pid)):
                with contextlib.suppress(OSError):
                    multiprocess.mark_process_dead(int(pid), folder)


def export_drift(model: str, version: str, psi: dict[str, float | None]) -> None:
    with contextlib.suppress(Exception):
        for statistic, value in psi.items():
            if value is not None:
                DRIFT_PSI.labels(model=model, version=version, statistic=statistic).set(value)
