"""The fleet scenario: 1, 2 and 3 replicas (1 and 2 in a quick run) behind HAProxy on this
machine (benchmarks/fleet.py).

Per replica count: req/s and p99 through the balancer at the top user count (Locust), the
CPU one request costs the whole fleet, and the projection it gives: the replicas share the
servers' cores, so N replicas can at best serve `cores / CPU per request`. With the most,
promotions by MLflow webhook posted once to the balancer: seconds from the promote call
until every replica, asked directly, answers the new version, with PROTO2PROD_PEERS (the
replica that got the webhook tells the others) and without (the others wait for their
poll); failed requests through the balancer meanwhile, and during a rolling restart.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
from typing import Any

from proto2prod.benchmarks import fleet
from proto2prod.benchmarks.context import Bench, Subject
from proto2prod.benchmarks.rollouts import WEBHOOK_POLL_S, create_webhook, mlflow_server
from proto2prod.benchmarks.scenarios import _env, _p2p
from proto2prod.benchmarks.targets import Target, free_port
from proto2prod.benchmarks.verdicts import Verdict

REPLICAS = (1, 2, 3)
QUICK_REPLICAS = (1, 2)
ALL_WITHIN_S = 1.0
"""The target: every replica on the promoted version within this of the webhook (median)."""


def run(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The replica counts' throughput, then promotions with and without the fan-out."""
    work, model = bench.work / "fleet", subject.name
    port = free_port()
    env = _env(
        work / "home",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
        PROTO2PROD_WEBHOOK_SECRET=secrets.token_hex(32),
        PROTO2PROD_POLL_S=f"{WEBHOOK_POLL_S:g}",  # with peers, only the webhook can be fast
    )
    items = json.loads(subject.payload.read_text())[:1]
    results: dict[str, Any] = {"model": model, "users": bench.users, "rows": []}
    command = bench.placement.server(_p2p())
    counts = QUICK_REPLICAS if bench.plan.quick else REPLICAS
    with mlflow_server(work, port, bench.logs / "fleet-mlflow.log"):
        for alias in ("production", None):
            train = _p2p("train", subject.entry, "--quick", *(["--alias", alias] if alias else []))
            subprocess.run(train, env=env, check=True, capture_output=True)
        for count in counts:
            with fleet.fleet(subject.ref, count, work / f"x{count}", env, argv=command) as up:
                results["rows"].append(_throughput(bench, subject, up, count))
                if count == max(counts):
                    results["peers"] = _promotions(bench, up, model, items, env)
                    results["rolling_restart"] = _restart(up, items)
        polled = {**env, "PROTO2PROD_POLL_S": f"{bench.plan.poll_s:g}"}
        with fleet.fleet(
            subject.ref, max(counts), work / "alone", polled, peers=False, argv=command
        ) as up:
            results["alone"] = _promotions(bench, up, model, items, polled)
    results["server_cores"] = len((bench.placement.server_cpus or "").split(",")) or os.cpu_count()
    return results


def _throughput(bench: Bench, subject: Subject, up: fleet.Fleet, count: int) -> dict[str, Any]:
    pids = {f"replica {i}": r.proc.pid for i, r in enumerate(up.replicas, 1) if r.proc}
    target = Target(f"fleet-{count}", up.url, "json", "/predict", "/livez", pids)
    point = bench.measure(target, subject.payload)
    cpu = sum(point.server_cpu.values())
    rps = point.model.rps
    return {
        "replicas": count,
        "rps": rps,
        "p50_ms": point.model.p50_ms,
        "p99_ms": point.model.p99_ms,
        "errors": point.model.errors,
        "cpu_ms_per_request": 1000 * cpu / rps if rps else None,
    }


def _promotions(
    bench: Bench, up: fleet.Fleet, model: str, items: list[Any], env: dict[str, str]
) -> dict[str, Any]:
    from proto2prod.registry import Registry
    from proto2prod.settings import Settings

    registry = Registry(Settings.from_env(env))
    hook = create_webhook(model, up.url, env)  # one URL: the balancer's
    seconds: list[float | None] = []
    try:
        with fleet.steady_load(up.url, items) as seen:
            for turn in range(bench.plan.promotions):
                version = "2" if turn % 2 == 0 else "1"
                registry.promote(model, version)
                seconds.append(fleet.time_to_all(up.replicas, items, version, timeout=90))
    finally:
        subprocess.run(_p2p("webhook", "delete", hook), env=env, capture_output=True)
    timed = [s for s in seconds if s is not None]
    return {
        "poll_s": float(env.get("PROTO2PROD_POLL_S", WEBHOOK_POLL_S)),
        "seconds": [None if s is None else round(s, 3) for s in seconds],
        "median_s": statistics.median(timed) if len(timed) == len(seconds) else None,
        "max_s": max(timed) if timed else None,
        "requests": sum(n for k, n in seen.items() if k.startswith("v")),
        "failed": fleet.failed(seen),
    }


def _restart(up: fleet.Fleet, items: list[Any]) -> dict[str, Any]:
    with fleet.steady_load(up.url, items) as seen:
        up.rolling_restart()
    return {
        "seconds_per_replica": [round(s, 1) for s in up.restarts],
        "requests": sum(n for k, n in seen.items() if k.startswith("v")),
        "failed": fleet.failed(seen),
        "what_failed": {k: n for k, n in seen.items() if not k.startswith("v") and k != "200"},
    }


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    """The fleet's claims: promote-to-all within 1 s with the fan-out, nothing failed
    through the balancer, and replicas' req/s against the CPU projection."""
    out: list[Verdict] = []
    for found in results["scenarios"].get("fleet", []):
        peers, alone = found["peers"], found["alone"]
        median, most = peers["median_s"], max(r["replicas"] for r in found["rows"])
        out.append(
            Verdict(
                f"{found['model']}: with PROTO2PROD_PEERS every one of {most} replicas "
                f"answers a promoted version within {ALL_WITHIN_S:g} s of the webhook (median "
                f"of {len(peers['seconds'])})",
                f"median {_s(median)}, max {_s(peers['max_s'])}; without the fan-out "
                f"(poll {alone['poll_s']:g} s): median {_s(alone['median_s'])}, "
                f"max {_s(alone['max_s'])}",
                median is not None and median < ALL_WITHIN_S,
            )
        )
        restart = found["rolling_restart"]
        out.append(
            Verdict(
                f"{found['model']}: 0 failed requests through the balancer during promotions "
                f"and a rolling restart",
                f"{peers['failed']} of {peers['requests']} during promotions, "
                f"{restart['failed']} of {restart['requests']} during the restart",
                peers["failed"] == 0 and alone["failed"] == 0 and restart["failed"] == 0,
                f"failed: {restart['what_failed']}" if restart["failed"] else "",
            )
        )
        out.append(_scaling(found))
    return out


def _scaling(found: dict[str, Any]) -> Verdict:
    rows = {r["replicas"]: r for r in found["rows"]}
    one, top = rows[min(rows)], rows[max(rows)]
    cost = top["cpu_ms_per_request"] or 0
    projected = 1000 * found["server_cores"] / cost if cost else 0
    holds = top["rps"] >= 0.9 * min(projected, one["rps"] * top["replicas"])
    return Verdict(
        f"{found['model']}: {top['replicas']} replicas serve >= 90% of what the servers' "
        f"{found['server_cores']} core(s) allow at their CPU per request",
        f"{top['rps']:.0f} req/s ({one['rps']:.0f} with one replica); "
        f"{cost:.2f} ms of CPU per request projects {projected:.0f} req/s",
        holds,
        ""
        if holds
        else "the replicas share the servers' cores: more replicas add no CPU here, only "
        "the balancer's hop",
    )


def _s(seconds: float | None) -> str:
    return "not all swapped" if seconds is None else f"{seconds:.2f} s"
