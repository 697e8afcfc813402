"""Scenarios beyond throughput: a model update under load, memory per replica, and the
remote front end's Gradio queue.

Update: clients loop (Locust) while a new version is promoted. Model-in-server needs a
restart of the web process (measured: failed requests, seconds without a successful
answer); decoupled, the service swaps live (failed requests, seconds until the new version
answers). Memory: the resident memory of N model-in-server web processes against N thin
front ends plus one service.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto2prod.benchmarks import load
from proto2prod.benchmarks.context import Bench, Subject
from proto2prod.benchmarks.targets import (
    BIN,
    Placement,
    Target,
    free_port,
    kill,
    process,
    wait_http,
)

UPDATE_POLL_S = 5.0


@dataclass(frozen=True)
class Timeline:
    """What the clients saw: (seconds since the action, ok, version) per answer."""

    events: list[tuple[float, bool, str]]

    @classmethod
    def read(cls, log: Path, t0: float) -> Timeline:
        events = []
        for line in log.read_text().splitlines() if log.exists() else []:
            t, ok, version = line.split(",", 2)
            events.append((float(t) - t0, ok == "1", version))
        return cls(sorted(events))

    @property
    def failed(self) -> int:
        return sum(not ok for _, ok, _ in self.events)

    def binned(self, versions: tuple[str, ...], width: float = 0.5) -> dict[str, Any]:
        """Answers per `width` seconds: ok per version, and failed. The report's chart needs
        no more, and per-request events would make results.json megabytes."""
        rows: dict[int, list[int]] = {}
        for t, ok, version in self.events:
            row = rows.setdefault(int(t // width), [0] * (len(versions) + 1))
            if not ok:
                row[-1] += 1
            elif version in versions:
                row[versions.index(version)] += 1
        return {
            "width_s": width,
            "columns": [*versions, "failed"],
            "rows": [[round(b * width, 3), *rows[b]] for b in sorted(rows)],
        }

    def first(self, version: str) -> float | None:
        return next((t for t, ok, v in self.events if ok and v == version and t >= 0), None)

    def gap(self) -> float:
        """The longest stretch after the action without a successful answer (until the
        end of the run if service never came back)."""
        times = [t for t, ok, _ in self.events if ok]
        before = [t for t in times if t < 0]
        points = ([before[-1]] if before else [0.0]) + [t for t in times if t >= 0]
        end = max((t for t, _, _ in self.events), default=0.0)
        if points[-1] < end and not any(ok for t, ok, _ in self.events if t > points[-1]):
            points.append(end)  # failures only after the last success
        return max((b - a for a, b in zip(points, points[1:], strict=False)), default=0.0)


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A server's environment: the registry under `home` unless `extra` names another."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {
        **env,
        "PROTO2PROD_HOME": str(home),
        "PROTO2PROD_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        **extra,
    }


def _p2p(*args: str) -> list[str]:
    return [sys.executable, "-m", "proto2prod.cli", *args]


def _promote(home: Path, model: str, version: str, alias: str = "production") -> None:
    """`proto2prod promote` (the registry client itself retries a briefly locked SQLite
    store, which the service's poller may be reading)."""
    done = subprocess.run(
        _p2p("promote", model, version, "--alias", alias),
        env=_env(home),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promoting {model}/{version} failed: {done.stderr.strip()}")


def _under_load(
    target: Target,
    payload: Path,
    log: Path,
    seconds: float,
    placement: Placement,
    action_at: float,
    action: Any,
) -> float:
    """Loop 8 clients on `target` for `seconds`; run `action` after `action_at` seconds.

    The load runs in a thread; Ctrl-C (or a failing action) stops its Locust at once
    instead of waiting out the `seconds`.
    """
    log.unlink(missing_ok=True)
    stop = threading.Event()

    def clients() -> None:
        with contextlib.suppress(load.Stopped):
            load.run(
                target,
                payload,
                users=8,
                duration=seconds,
                warmup=0.0,
                placement=placement,
                version_log=log,
                stop=stop,
            )

    worker = threading.Thread(target=clients, name="update-load", daemon=True)
    worker.start()
    try:
        time.sleep(action_at)
        t0 = time.time()
        action()
        worker.join()
    except BaseException:
        stop.set()
        worker.join(timeout=30)
        raise
    return t0


def update(bench: Bench, subject: Subject, old: str = "1", new: str = "2") -> dict[str, Any]:
    """Promote `new` while clients loop, for both architectures."""
    results: dict[str, Any] = {"model": subject.name, "from": old, "to": new}
    _promote(bench.home, subject.name, old)
    results["decoupled"] = _update_decoupled(bench, subject, old, new)
    _promote(bench.home, subject.name, old)
    results["in_server"] = _update_in_server(bench, subject, old, new)
    return results


def _update_decoupled(bench: Bench, subject: Subject, old: str, new: str) -> dict[str, Any]:
    """The service follows the alias: a live swap."""
    env = _env(bench.home, PROTO2PROD_POLL_S=str(UPDATE_POLL_S))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = bench.placement.server(_p2p("serve", subject.ref, "--port", str(port)))
    with process(serve, f"{url}/readyz", bench.logs / f"{subject.name}-update-service.log", env):
        target = Target("service", url, "json", "/predict", "/livez")
        log = bench.logs / f"{subject.name}-update-decoupled.csv"
        t0 = _under_load(
            target,
            subject.payload,
            log,
            bench.plan.update_seconds,
            bench.placement,
            5.0,
            lambda: _promote(bench.home, subject.name, new),
        )
        line = Timeline.read(log, t0)
        return {
            "failed": line.failed,
            "requests": len(line.events),
            "seconds_to_new_version": line.first(new),
            "poll_s": UPDATE_POLL_S,
            "timeline": line.binned((old, new)),
        }


def _update_in_server(bench: Bench, subject: Subject, old: str, new: str) -> dict[str, Any]:
    """The web process holds the model, so it restarts to change it."""
    env = _env(bench.home, PROTO2PROD_POLL_S=str(UPDATE_POLL_S))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = bench.placement.server(
        _p2p("prototype", subject.entry, "--model", subject.ref, "--port", str(port))
    )
    logs = bench.logs / f"{subject.name}-update-inserver"
    box: dict[str, subprocess.Popen[bytes]] = {}

    def started(log: Path) -> None:
        with log.open("wb") as out:
            box["proc"] = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_http(url, box["proc"], log)

    def restart() -> None:
        _promote(bench.home, subject.name, new)
        kill(box["proc"])
        started(Path(f"{logs}-2.log"))

    try:
        started(Path(f"{logs}.log"))
        target = Target("prototype", url, "gradio", "predict", "/")
        log = Path(f"{logs}.csv")
        seconds = bench.plan.update_seconds
        t0 = _under_load(target, subject.payload, log, seconds, bench.placement, 5.0, restart)
        line = Timeline.read(log, t0)
        return {
            "failed": line.failed,
            "requests": len(line.events),
            "seconds_without_service": line.gap(),
            "seconds_to_new_version": line.first(new),
            "timeline": line.binned((old, new)),
        }
    finally:
        if "proc" in box:
            kill(box["proc"])


QUEUE_LIMITS = (8, 32, 0)  # the former remote default, more, none (0: the default now)


def queue(bench: Bench, subject: Subject) -> dict[str, Any]:
    """One service; in front of it the remote front end once per Gradio concurrency limit,
    each under the same load at the top user count."""
    env = _env(bench.home)
    rows = []
    port = free_port()
    svc_url = f"http://127.0.0.1:{port}"
    serve = bench.placement.server(_p2p("serve", subject.ref, "--port", str(port)))
    svc_log = bench.logs / f"{subject.name}-queue-service.log"
    with process(serve, f"{svc_url}/readyz", svc_log, env) as svc:
        for limit in QUEUE_LIMITS:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            args = _p2p(
                "prototype", "--backend", svc_url, "--port", str(port), "--concurrency", str(limit)
            )
            log = bench.logs / f"{subject.name}-queue-{limit}.log"
            with process(bench.placement.server(args), url, log, env) as front:
                roles = {"front end": front, "service": svc}
                target = Target("decoupled", url, "gradio", "predict", "/", roles)
                point = bench.measure(target, subject.payload)
            rows.append(
                {
                    "concurrency": limit or None,
                    "rps": point.model.rps,
                    "p50_ms": point.model.p50_ms,
                    "p99_ms": point.model.p99_ms,
                    "errors": point.model.errors,
                    "server_cpu": {role: round(c, 3) for role, c in point.server_cpu.items()},
                }
            )
    return {"model": subject.name, "users": bench.users, "rows": rows}


def _rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def memory(bench: Bench, subject: Subject) -> dict[str, Any]:
    """Resident memory (whole process trees) of N replicas, both ways."""
    model, entry, counts = subject.name, subject.entry, bench.plan.memory_counts
    home, logs, placement = bench.home, bench.logs, bench.placement
    env = _env(home)
    ref = f"{model}@production"
    top = max(counts)
    with ExitStack() as stack:
        fat = []
        for i in range(top):
            port = free_port()
            args = placement.server(_p2p("prototype", entry, "--model", ref, "--port", str(port)))
            fat.append(
                stack.enter_context(
                    process(args, f"http://127.0.0.1:{port}", logs / f"{model}-mem-fat{i}.log", env)
                )
            )
        fat_mb = [_rss_mb(pid) for pid in fat]
    with ExitStack() as stack:
        port = free_port()
        svc_url = f"http://127.0.0.1:{port}"
        svc = stack.enter_context(
            process(
                placement.server(_p2p("serve", ref, "--port", str(port))),
                f"{svc_url}/readyz",
                logs / f"{model}-mem-svc.log",
                env,
            )
        )
        thin = []
        for i in range(top):
            port = free_port()
            args = placement.server(_p2p("prototype", "--backend", svc_url, "--port", str(port)))
            thin.append(
                stack.enter_context(
                    process(
                        args, f"http://127.0.0.1:{port}", logs / f"{model}-mem-thin{i}.log", env
                    )
                )
            )
        service_mb = _rss_mb(svc)
        thin_mb = [_rss_mb(pid) for pid in thin]
    rows = []
    for n in counts:
        in_server = sum(fat_mb[:n])
        decoupled = sum(thin_mb[:n]) + service_mb
        rows.append(
            {
                "n": n,
                "in_server_mb": round(in_server, 1),
                "decoupled_mb": round(decoupled, 1),
                "ratio": round(decoupled / in_server, 3),
            }
        )
    return {
        "model": model,
        "service_mb": round(service_mb, 1),
        "front_end_mb": round(max(thin_mb), 1),
        "in_server_replica_mb": round(max(fat_mb), 1),
        "rows": rows,
    }
