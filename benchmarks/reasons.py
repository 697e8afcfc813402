"""Why a claim does not hold, from the run's own numbers: the report says so beside the verdict.

Each reason is computed from what the run measured (CPU seconds per request by process,
the raw limit, memory by process), never written in advance; where the run measured no
cause, `explained` says that instead of leaving the column empty.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from proto2prod.benchmarks.projections import run_row

if TYPE_CHECKING:
    from proto2prod.benchmarks.verdicts import Verdict


def cpu_ms(row: dict[str, Any] | None, role: str) -> float | None:
    """CPU milliseconds `role`'s processes spent per answered request at this point."""
    if not row or not row.get("rps"):
        return None
    cores = (row.get("server_cpu") or {}).get(role)
    return None if cores is None else 1000 * cores / row["rps"]


def slow_page(results: dict[str, Any], light: dict[str, Any]) -> str:
    """A front end's light route was slow while the model route was saturated."""
    point = run_row(results, light["model"], light["architecture"], light["users"])
    front = cpu_ms(point, "front end")
    if front is None or point is None:
        return "the run has no CPU figures for this front end"
    busy = sum((point.get("server_cpu") or {}).values())
    return (
        f"the front end spent {front:.2f} ms of CPU on every prediction it forwarded, on the "
        f"core it shares with the service ({busy:.0%} busy): its page's requests wait behind them"
    )


def front_end_cost(pair: dict[str, Any], alone: dict[str, Any]) -> str:
    """A thin front end cost the pair throughput against the service alone."""
    front, service = cpu_ms(pair, "front end"), cpu_ms(pair, "service")
    if front is None or service is None:
        return "the run has no CPU figures for the pair"
    return (
        f"the front end spends {front:.2f} ms of CPU per request beside the service's "
        f"{service:.2f} ms, on the same core: their sum bounds the pair"
    )


def below_limit(service: dict[str, Any], limit: float) -> str:
    """The service reached less of the raw batched limit than the target."""
    spent = cpu_ms(service, "service")
    if spent is None or not limit:
        return ""
    forward = 1000 / limit
    return (
        f"each request costs the service {spent:.3f} ms of CPU, of which the forward pass at "
        f"the limit's batch is {forward:.3f} ms per item: HTTP, JSON, validation and the "
        f"batcher ({spent - forward:.3f} ms) are what the raw limit does not pay"
    )


def peer_close(service: dict[str, Any], peer: dict[str, Any]) -> str:
    """A peer came closer to the service than the target factor."""
    ours, theirs = cpu_ms(service, "service"), cpu_ms(peer, "server")
    if ours is None or theirs is None:
        return ""
    return (
        f"CPU per request: the service {ours:.3f} ms, `{peer['architecture']}` {theirs:.3f} ms; "
        f"the work both share (decoding, the forward pass) is most of it"
    )


def long_tail(service: dict[str, Any], limit: float) -> str:
    """The service's p99 was further from its p50 than the target."""
    if not limit or service.get("p50_ms") is None:
        return ""
    gap = service["p99_ms"] - service["p50_ms"]
    batch_ms = 1000 * service["users"] / limit
    return (
        f"p99 is p50 + {gap:.1f} ms; one batch of {service['users']} takes {batch_ms:.1f} ms at "
        f"the limit, so a request that arrives as a batch starts waits for it "
        f"({gap / batch_ms:.1f} batches)"
        if batch_ms
        else ""
    )


def memory(mem: dict[str, Any]) -> str:
    """N thin front ends and a service used more than the target share of N replicas."""
    top = mem["rows"][-1]
    model_mb = mem["in_server_replica_mb"] - mem["front_end_mb"]
    return (
        f"a thin front end alone is {mem['front_end_mb']:.0f} MB (its UI library and Python) "
        f"and a replica with the model {mem['in_server_replica_mb']:.0f} MB: the model adds "
        f"only {model_mb:.0f} MB, so {top['n']} front ends cost most of what {top['n']} "
        f"replicas do"
    )


def explained(verdict: Verdict) -> Verdict:
    """A failing verdict without a reason: say that the run measured none."""
    return dataclasses.replace(
        verdict,
        reason=f"this run measured no cause beyond the figures ({verdict.numbers}); the "
        f"target is in the claim",
    )
