"""Rollout and guardrail scenarios: what a shadow and drift tracking cost the champion, and
how fast a promotion arrives by webhook against by poll.

Shadow: the same service and load (Locust, the top user count) without a shadow and with
`--shadow challenger --shadow-rate 1.0`; the shadow yields (it runs only when the model is
idle), so the champion's throughput should barely move. Webhook: a real `mlflow server`
delivers signed alias events to the service (poll 60 s, so only the webhook can be fast),
then the same promotions by poll alone (the default 10 s; 2 s in a quick run); each timing
runs from the promote call to the first answer of the new version, probed every 20 ms.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from proto2prod.benchmarks.context import Bench, Subject
from proto2prod.benchmarks.scenarios import _env, _p2p, _promote
from proto2prod.benchmarks.targets import BIN, Target, free_port, process
from proto2prod.client import Client

Mode = tuple[str, list[str], dict[str, str]]
"""A name, extra `serve` options, extra environment."""
WEBHOOK_POLL_S = 60.0
"""The poll while webhooks deliver: a fast swap can only have come by webhook."""


def shadow(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The champion under the same load without a shadow, then with one at rate 1.0."""
    _promote(bench.home, subject.name, "1")
    _promote(bench.home, subject.name, "2", alias="challenger")
    modes: list[Mode] = [
        ("none", [], {}),
        ("shadow 1.0", ["--shadow", "challenger", "--shadow-rate", "1.0"], {}),
    ]
    return {"model": subject.name, "users": bench.users, "rows": _paired(bench, subject, modes)}


def drift(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The service under the same load with drift tracking off, then on (the default)."""
    _promote(bench.home, subject.name, "1")
    modes: list[Mode] = [
        ("off", [], {"PROTO2PROD_DRIFT": "0"}),
        ("on", [], {"PROTO2PROD_DRIFT": "1"}),
    ]
    return {"model": subject.name, "users": bench.users, "rows": _paired(bench, subject, modes)}


def _paired(bench: Bench, subject: Subject, modes: list[Mode]) -> list[dict[str, Any]]:
    """One service per mode (extra `serve` options, environment), all started together, then
    loaded in turn A B B A (`bench.rounds` = 2): a pair differs by a few percent, less than
    this machine drifts from one run to the next, so each mode is measured early and late and
    averaged. The idle service meanwhile costs nothing worth counting."""
    with contextlib.ExitStack() as stack:
        started = []
        for mode, options, extra_env in modes:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            args = bench.placement.server(_p2p("serve", subject.ref, "--port", str(port), *options))
            log = bench.logs / f"{subject.name}-{mode.split()[0]}.log"
            env = _env(bench.home, **extra_env)
            pid = stack.enter_context(process(args, f"{url}/readyz", log, env))
            if "--shadow" in options:  # the shadow loads after the champion is ready
                _until(partial(_comparing, url), 120, "the shadow to load")
            started.append((mode, url, pid, "--shadow" in options))
        order = [
            i
            for r in range(bench.rounds)
            for i in (range(len(modes)) if r % 2 == 0 else reversed(range(len(modes))))
        ]
        points: dict[int, list[Any]] = {i: [] for i in range(len(modes))}
        for i in order:
            _, url, pid, _ = started[i]
            target = Target("service", url, "json", "/predict", "/livez", {"service": pid})
            points[i].append(bench.measure(target, subject.payload).model)
        return [
            _paired_row(mode, points[i], _rollout(url).get("shadow") if shadowing else None)
            for i, (mode, url, _, shadowing) in enumerate(started)
        ]


def _paired_row(mode: str, runs: list[Any], state: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "mode": mode,
        "rps": statistics.mean(p.rps for p in runs),
        "p50_ms": statistics.mean(p.p50_ms for p in runs),
        "p99_ms": statistics.mean(p.p99_ms for p in runs),
        "errors": sum(p.errors for p in runs),
        "runs_rps": [round(p.rps, 1) for p in runs],
        "compared": state["compared"] if state else None,
        "sampled": state["sampled"] if state else None,
        "dropped": state["dropped"] if state else None,
    }


def webhook(bench: Bench, subject: Subject) -> dict[str, Any]:
    """Promotions by MLflow webhook (poll 60 s), then by the poll (the plan's) alone."""
    from proto2prod.registry import Registry
    from proto2prod.settings import Settings

    work, model, promotions = bench.work, subject.name, bench.plan.promotions
    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    secret = secrets.token_hex(32)
    env = _env(
        work / "webhook-home", MLFLOW_TRACKING_URI=tracking, PROTO2PROD_WEBHOOK_SECRET=secret
    )
    items = json.loads(subject.payload.read_text())[:1]
    results: dict[str, Any] = {"model": model, "promotions": promotions}
    with mlflow_server(work, port, bench.logs / "webhook-mlflow.log"):
        for alias in ("production", None):
            train = _p2p("train", subject.entry, "--quick", *(["--alias", alias] if alias else []))
            subprocess.run(train, env=env, check=True, capture_output=True)
        registry = Registry(Settings.from_env(env))
        for mode, poll in (("webhook", WEBHOOK_POLL_S), ("poll", bench.plan.poll_s)):
            registry.promote(model, "1")
            svc_port = free_port()
            url = f"http://127.0.0.1:{svc_port}"
            serve = _p2p("serve", subject.ref, "--port", str(svc_port), "--poll-s", str(poll))
            log = bench.logs / f"{model}-update-{mode}.log"
            with process(bench.placement.server(serve), f"{url}/readyz", log, env):
                hook_id = create_webhook(model, url, env) if mode == "webhook" else None
                try:
                    seconds = _time_promotions(registry, model, url, items, promotions, poll)
                finally:
                    if hook_id is not None:
                        delete = _p2p("webhook", "delete", hook_id)
                        subprocess.run(delete, env=env, check=True, capture_output=True)
            results[mode] = {
                "poll_s": poll,
                "seconds": [round(s, 3) for s in seconds],
                "median_s": statistics.median(seconds),
                "max_s": max(seconds),
            }
    return results


def mlflow_server(work: Path, port: int, log: Path) -> contextlib.AbstractContextManager[int]:
    """A real `mlflow server` on loopback that delivers webhooks to loopback URLs."""
    from cryptography.fernet import Fernet

    server_env = _env(
        work / "webhook-home",
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        MLFLOW_WEBHOOK_CACHE_TTL="1",
    )
    args = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", "1", "--backend-store-uri", f"sqlite:///{work / 'webhook.db'}"]
    args += ["--artifacts-destination", str(work / "webhook-artifacts")]
    return process(args, f"http://127.0.0.1:{port}/health", log, server_env)


def create_webhook(model: str, url: str, env: dict[str, str]) -> str:
    created = subprocess.run(
        _p2p("webhook", "create", f"bench-{model}", "--url", url),
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    time.sleep(1.5)  # the tracking server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1)
    return created.stdout.split()[1]


def _time_promotions(
    registry: Any, model: str, url: str, items: list[Any], count: int, poll_s: float
) -> list[float]:
    """Seconds from each promote call to the first answer of the promoted version."""
    seconds = []
    with Client(url, timeout=10) as client:

        def answers(version: str) -> bool:
            return client.predict(items).version == version

        for i in range(count):
            wanted = "2" if i % 2 == 0 else "1"
            started = time.perf_counter()
            registry.promote(model, wanted)
            _until(partial(answers, wanted), 2 * poll_s + 30, f"version {wanted} to answer")
            seconds.append(time.perf_counter() - started)
    return seconds


def _comparing(url: str) -> bool:
    return bool(_rollout(url).get("comparing"))


def _rollout(url: str) -> dict[str, Any]:
    with Client(url, timeout=10) as client:
        return client.metadata().get("rollout") or {}


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.02)
    raise RuntimeError(f"not within {timeout:g} s: {what}")
