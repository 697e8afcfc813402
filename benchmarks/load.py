"""One load point: Locust, headless, against a running target; HDR figures back.

Locust runs as its own process (or a master and `workers` worker processes) pinned to the
load generator's cores; its CPU use is sampled so a saturated load generator is flagged
instead of being mistaken for a slow server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proto2prod.benchmarks import hdr
from proto2prod.benchmarks.targets import Placement, Target, free_port, kill

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


class Stopped(Exception):
    """The load was stopped from outside (Ctrl-C in the scenario's main thread)."""


@dataclass(frozen=True)
class Point:
    model: hdr.Summary
    light: hdr.Summary | None
    loadgen_cpu: float
    """CPU seconds per wall second of the load generator (1.0 = one core saturated)."""
    workers: int
    server_cpu: dict[str, float] = field(default_factory=dict)
    """Role -> CPU seconds per wall second of that server's process tree, measured after
    the warm-up: divided by req/s, the CPU one request costs it."""

    @property
    def saturated(self) -> bool:
        return self.loadgen_cpu >= 0.9 * max(1, self.workers)


def run(
    target: Target,
    payload: Path,
    *,
    users: int,
    duration: float,
    warmup: float,
    placement: Placement,
    workers: int = 0,
    rate: float = 0.0,
    light: bool = False,
    version_log: Path | None = None,
    stop: threading.Event | None = None,
) -> Point:
    """Locust against `target`; `stop` set from another thread ends it early (`Stopped`)."""
    out = Path(tempfile.mkstemp(prefix="p2p-hdr-", suffix=".json")[1])
    env = {
        **os.environ,
        "P2P_KIND": target.kind,
        "P2P_PATH": target.path,
        "P2P_PAYLOAD": str(payload),
        "P2P_WARMUP_S": str(warmup),
        "P2P_OUT": str(out),
        "P2P_RATE": str(rate),
        "P2P_LIGHT_PATH": target.light_path if light else "",
        "P2P_VERSION_LOG": str(version_log or ""),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    classes = ["ModelUser", "LightUser"] if light else ["ModelUser"]
    base = locust_command(target, users + (1 if light else 0), warmup + duration)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = start_locust(base, classes, workers, placement, env, Path(str(out) + ".log"))
        loadgen_cpu, server_cpu = watch(procs, target, warmup, duration, stop)
        if procs[0].poll() is None or procs[0].returncode != 0:
            log = Path(str(out) + ".log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"locust failed against {target.url}:\n{log}")
        collected: list[dict[str, Any]] = json.loads(out.read_text() or "[]")
    finally:
        for proc in procs:
            kill(proc)
        out.unlink(missing_ok=True)
        Path(str(out) + ".log").unlink(missing_ok=True)
    model = _summary(collected, "model", "errors", duration)
    light_summary = _summary(collected, "light", "light_errors", duration) if light else None
    return Point(model, light_summary, loadgen_cpu, workers, server_cpu)


def locust_command(
    target: Target, users: int, seconds: float, locustfile: Path = LOCUSTFILE
) -> list[str]:
    """Headless Locust for `seconds` at `users` (all spawned at once), summary only."""
    args = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"]
    args += ["-u", str(users), "-r", str(users), "-t", f"{seconds:.0f}s", "--host", target.url]
    args += ["--only-summary", "--stop-timeout", "10", "--exit-code-on-error", "0"]
    return [*args, "--loglevel", "ERROR"]


def start_locust(
    base: list[str],
    classes: list[str],
    workers: int,
    placement: Placement,
    env: dict[str, str],
    log: Path,
    locustfile: Path = LOCUSTFILE,
) -> list[subprocess.Popen[bytes]]:
    """One Locust process, or a master and `workers` workers (the master first)."""
    if not workers:
        return [_spawn(placement.load([*base, *classes]), env, log)]
    port = free_port()
    master = [*base, "--master", "--expect-workers", str(workers)]
    procs = [_spawn(placement.load([*master, "--master-bind-port", str(port), *classes]), env, log)]
    worker = [sys.executable, "-m", "locust", "-f", str(locustfile), "--worker"]
    worker += ["--master-port", str(port), "--loglevel", "ERROR", *classes]
    return procs + [_spawn(placement.load(worker), env, None) for _ in range(workers)]


def watch(
    procs: list[subprocess.Popen[bytes]],
    target: Target,
    warmup: float,
    duration: float,
    stop: threading.Event | None,
) -> tuple[float, dict[str, float]]:
    """Until Locust ends: the load generator's CPU per wall second over the whole run, and
    each server role's over the measured window (after the warm-up)."""
    import psutil

    watched = [psutil.Process(p.pid) for p in procs]
    servers = {role: psutil.Process(pid) for role, pid in target.processes.items()}
    cpu0 = cpu1 = sum(_cpu(w) for w in watched)
    wall0 = wall1 = time.monotonic()
    deadline = wall0 + warmup + duration + 60
    measured: tuple[float, dict[str, float]] | None = None  # from the warm-up's end
    server_cpu: dict[str, float] = {}
    while procs[0].poll() is None and time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            raise Stopped(f"load on {target.url} stopped before its end")
        cpu1 = sum(_cpu(w) for w in watched)
        wall1 = time.monotonic()
        # Server CPU over the measured window only; the last sample lands before Locust
        # stops, so no idle tail is counted.
        if measured is None and wall1 - wall0 >= warmup + 1:
            measured = (wall1, {r: _cpu(p) for r, p in servers.items()})
        elif measured is not None and wall1 - wall0 <= warmup + duration:
            server_cpu = {
                r: (_cpu(p) - measured[1][r]) / (wall1 - measured[0]) for r, p in servers.items()
            }
        time.sleep(0.5)
    return (cpu1 - cpu0) / max(1e-9, wall1 - wall0), server_cpu


def _summary(collected: list[dict[str, Any]], key: str, errors: str, seconds: float) -> hdr.Summary:
    return hdr.summarize(
        hdr.merge([c[key] for c in collected]),
        errors=sum(c[errors] for c in collected),
        seconds=seconds,
    )


def _spawn(args: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    err = log.open("wb") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
    finally:
        if log:
            err.close()  # type: ignore[union-attr]


def _cpu(proc: Any) -> float:
    import psutil

    try:
        times = proc.cpu_times()
        children = sum(c.cpu_times().user + c.cpu_times().system for c in proc.children(True))
        return float(times.user + times.system + children)
    except psutil.Error:  # the process ended between two samples: count nothing more
        return 0.0
