"""The CPU-cost projection: from the CPU each process spent per request, the req/s a
front end and a service would reach on more cores than this machine has."""

from __future__ import annotations

from typing import Any


def run_row(results: dict[str, Any], model: str, arch: str, users: int) -> dict[str, Any] | None:
    for row in results["runs"]:
        if (row["model"], row["architecture"], row["users"]) == (model, arch, users):
            return dict(row)
    return None


def top_users(results: dict[str, Any]) -> int:
    return max((r["users"] for r in results["runs"] if r["architecture"] != "limit"), default=0)


FRONT_END_CORES = (1, 2, 4, 8, 16)


def _pair_without_page_loads(results: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The queue scenario's run of the default front end: the decoupled pair under the same
    load, without the throughput point's extra user loading the Gradio page (whose CPU
    would count against each prediction)."""
    for queue in results["scenarios"].get("queue", []):
        for row in queue["rows"] if queue["model"] == model else []:
            if row["concurrency"] is None and row.get("server_cpu"):
                limits = [
                    r
                    for r in results["runs"]
                    if r["model"] == model and r.get("limit_samples_per_s")
                ]
                return {
                    **row,
                    "users": queue["users"],
                    "limit_samples_per_s": limits[-1]["limit_samples_per_s"] if limits else 0,
                    "point": "the queue scenario's default front end (no page-load user)",
                }
    return None


def projections(results: dict[str, Any]) -> list[dict[str, Any]]:
    """From measured CPU per request, the req/s of k front-end cores before one service.

    The decoupled point measures each process's CPU per request with the two sharing one
    core, so the pair's ceiling there is 1 / (front end + service): the check against what
    was measured. On separate cores each side scales apart: k front-end cores give
    k / front end; one saturated service core gives 1 / (its CPU per request when it alone
    is saturated: the `service` point, where batches are full). On a GPU the forward pass
    leaves the CPU (the raw limit's per-item time is taken off), so the service's
    per-request CPU work bounds it. Those figures need more cores than this machine has.
    """
    out = []
    users = top_users(results)
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        pair = _pair_without_page_loads(results, model) or run_row(
            results, model, "decoupled", users
        )
        cpu = (pair or {}).get("server_cpu") or {}
        if pair is None or not pair["rps"] or not {"front end", "service"} <= set(cpu):
            continue
        front_ms = 1000 * cpu["front end"] / pair["rps"]
        service_ms = 1000 * cpu["service"] / pair["rps"]
        alone = run_row(results, model, "service", users) or {}
        alone_cpu = (alone.get("server_cpu") or {}).get("service")
        saturated_ms = 1000 * alone_cpu / alone["rps"] if alone_cpu and alone["rps"] else service_ms
        limit = pair.get("limit_samples_per_s") or 0
        forward_ms = 1000 / limit if limit else 0.0
        gpu_service_ms = max(saturated_ms - forward_ms, 1e-3)
        out.append(
            {
                "model": model,
                "users": pair["users"],
                "point": pair.get(
                    "point", "the decoupled throughput point (with the page-load user)"
                ),
                "front_end_ms": front_ms,
                "service_ms": service_ms,
                "saturated_service_ms": saturated_ms,
                "forward_ms": forward_ms,
                "core_busy": cpu["front end"] + cpu["service"],
                "measured_rps": pair["rps"],
                "shared_core_rps": 1000 / (front_ms + service_ms),
                "cpu_service": {
                    k: min(k * 1000 / front_ms, 1000 / saturated_ms) for k in FRONT_END_CORES
                },
                "gpu_service": {
                    k: min(k * 1000 / front_ms, 1000 / gpu_service_ms) for k in FRONT_END_CORES
                },
            }
        )
    return out
