"""What the benchmark claims, and whether this run's numbers bear each claim out.

Every threshold lives in `TARGETS`, so the policy is read and changed in one place; the
functions below only compare. A claim a run did not measure is left out, never passed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from proto2prod.benchmarks import reasons
from proto2prod.benchmarks.projections import projections, run_row, top_users


@dataclass(frozen=True)
class Targets:
    limit_share: float = 0.90
    """The service's req/s over the adjacent raw batched limit (samples/s)."""
    peers: tuple[tuple[str, float], ...] = (
        ("gradio", 6.0),
        ("mlflow", 2.5),
        ("asgi", 1.5),
        ("bentoml-batchable", 1.2),
        ("litserve", 1.0),
    )
    """(architecture, factor): the service serves at least factor x its req/s."""
    bare_share: tuple[tuple[str, float], ...] = (("digits", 0.85), ("heavy", 0.95))
    """(model, share): the service's req/s over a bare server's around the same version
    (its own overhead: limits, auth, metrics, per-item errors); other models: 0.85."""
    tail_ratio: float = 1.5
    """Service p99 over p50."""
    light_p99_ms: float = 50.0
    """The decoupled (Gradio) front end's page while the model route is saturated."""
    node_light_p99_ms: float = 20.0
    """The Node front end's light route while the model route is saturated."""
    node_share: float = 0.9
    """The Node front end's req/s over the service's alone."""
    swap_slack_s: float = 5.0
    """A promoted version answers within the poll interval plus this."""
    restart_gap_s: float = 1.0
    """A restart of a model-in-server app is felt when clients go this long unanswered."""
    memory_ratio: float = 0.5
    """N thin front ends + 1 service against N model-in-server replicas."""
    front_end_mb: float = 300.0
    service_mb: float = 700.0
    projection_error: float = 0.25
    """The CPU-cost projection of the decoupled pair against its measured req/s."""
    shadow_share: float = 0.90
    """The champion's req/s with a shadow at rate 1.0 over its req/s without one."""
    drift_share: float = 0.95
    """The service's req/s with drift tracking on over its req/s with it off."""
    webhook_median_s: float = 1.0
    """Median seconds from a promote call to the new version answering, by webhook."""
    step_speedup: float = 4.0
    """A generative model's tokens/s with step batching over one sequence at a time, at
    the most concurrent streams measured."""
    first_token_ratio: float = 10.0
    """Time to first token: p99 at the most streams over p50 at one stream (step batching)."""


TARGETS = Targets()


@dataclass(frozen=True)
class Verdict:
    claim: str
    numbers: str
    holds: bool
    reason: str = ""
    """Why it does not hold, where the run itself tells (e.g. a saturated load generator)."""

    @property
    def word(self) -> str:
        return "holds" if self.holds else "does not hold here"


def _loadgen_reason(*rows: dict[str, Any]) -> str:
    if any(r.get("loadgen_saturated") for r in rows):
        return "the load generator's core was saturated: it, not the server, was the limit"
    return ""


def verdicts(results: dict[str, Any], t: Targets = TARGETS) -> list[Verdict]:
    """Each claim against this run's numbers, at the highest user count measured."""
    out: list[Verdict] = []
    users = top_users(results)
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        service = run_row(results, model, "service", users)
        if service is None:
            continue
        out += _throughput(results, model, users, service, t)
    out += _responsiveness(results, t)
    out += _node_throughput(results, t)
    out += _updates(results, t)
    out += _memory(results, t)
    out += _projections(results, t)
    out += _rollouts(results, t)
    out += _streams(results, t)
    out += _fleet(results)
    # a reason says why a claim fails: kept for those only, and never left empty for them
    return [
        dataclasses.replace(v, reason="") if v.holds else v if v.reason else reasons.explained(v)
        for v in out
    ]


def _fleet(results: dict[str, Any]) -> list[Verdict]:
    from proto2prod.benchmarks.fleet_scenario import verdicts as fleet_verdicts

    return fleet_verdicts(results)


def _streams(results: dict[str, Any], t: Targets) -> list[Verdict]:
    from proto2prod.benchmarks.stream_verdicts import generation

    return generation(results, t)


def _rollouts(results: dict[str, Any], t: Targets) -> list[Verdict]:
    out = []
    costs = (
        ("shadow", "with a shadow at rate 1.0 the champion", t.shadow_share),
        ("drift", "with drift tracking on the service", t.drift_share),
    )
    for name, claim, target in costs:
        for paired in results["scenarios"].get(name, []):
            without, with_ = paired["rows"]
            share = with_["rps"] / without["rps"] if without["rps"] else 0.0
            shadowed = (
                f"; {with_['compared']} items compared, {with_['dropped']} of "
                f"{with_['sampled']} sampled requests dropped"
                if with_.get("compared") is not None
                else ""
            )
            out.append(
                Verdict(
                    f"{paired['model']}, {paired['users']} users: {claim} keeps >= {target:.0%} "
                    "of its throughput",
                    f"{with_['rps']:.0f} vs {without['rps']:.0f} req/s ({share:.0%}); p99 "
                    f"{with_['p99_ms']:.1f} vs {without['p99_ms']:.1f} ms{shadowed}",
                    share >= target and with_["errors"] == 0,
                )
            )
    for hook in results["scenarios"].get("webhook", []):
        pushed, polled = hook["webhook"], hook["poll"]
        out.append(
            Verdict(
                f"{hook['model']}: by MLflow webhook a promoted version answers within "
                f"{t.webhook_median_s:g} s (median of {hook['promotions']})",
                f"median {pushed['median_s']:.2f} s, max {pushed['max_s']:.2f} s (poll "
                f"{pushed['poll_s']:g} s); by the {polled['poll_s']:g} s poll alone: median "
                f"{polled['median_s']:.2f} s, max {polled['max_s']:.2f} s",
                pushed["median_s"] < t.webhook_median_s,
            )
        )
    return out


def _throughput(
    results: dict[str, Any], model: str, users: int, service: dict[str, Any], t: Targets
) -> list[Verdict]:
    out = []
    limit = service.get("limit_samples_per_s") or 0
    share = service["rps"] / limit if limit else 0
    out.append(
        Verdict(
            f"{model}, {users} users: the service reaches >= {t.limit_share * 100:g} % of the raw "
            "batched limit",
            f"{service['rps']:.0f} req/s vs limit {limit:.0f} samples/s ({share:.0%})",
            share >= t.limit_share,
            _loadgen_reason(service) or reasons.below_limit(service, limit),
        )
    )
    for peer, factor in t.peers:
        other = run_row(results, model, peer, users)
        if other is None:
            continue
        ratio = service["rps"] / other["rps"] if other["rps"] else float("inf")
        out.append(
            Verdict(
                f"{model}, {users} users: the service serves >= {factor:g}x `{peer}`",
                f"{service['rps']:.0f} vs {other['rps']:.0f} req/s ({ratio:.2f}x)",
                ratio >= factor,
                _loadgen_reason(service) or reasons.peer_close(service, other),
            )
        )
    out += _against_bare(results, model, users, service, t)
    if service["p50_ms"]:
        tail = service["p99_ms"] / service["p50_ms"]
        out.append(
            Verdict(
                f"{model}, {users} users: service p99 <= {t.tail_ratio:g}x p50",
                f"p50 {service['p50_ms']:.1f} ms, p99 {service['p99_ms']:.1f} ms ({tail:.2f}x)",
                tail <= t.tail_ratio,
                reasons.long_tail(service, service.get("limit_samples_per_s") or 0),
            )
        )
    errors = sum(
        r.get("errors", 0)
        for r in results["runs"]
        if r["model"] == model and r["architecture"] in ("service", "decoupled")
    )
    out.append(
        Verdict(
            f"{model}: decoupled serving fails no request under load",
            f"{errors} failed requests",
            errors == 0,
        )
    )
    return out


def _against_bare(
    results: dict[str, Any], model: str, users: int, service: dict[str, Any], t: Targets
) -> list[Verdict]:
    bare = run_row(results, model, "bare", users)
    if bare is None:
        return []
    share = dict(t.bare_share).get(model, 0.85)
    ratio = service["rps"] / bare["rps"] if bare["rps"] else float("inf")
    return [
        Verdict(
            f"{model}, {users} users: what the service adds to a request leaves >= {share:g}x "
            "the req/s of a bare server around the same version (`bare`)",
            f"{service['rps']:.0f} vs {bare['rps']:.0f} req/s ({ratio:.2f}x)",
            ratio >= share,
            _loadgen_reason(service),
        )
    ]


def _responsiveness(results: dict[str, Any], t: Targets) -> list[Verdict]:
    out = []
    rows = results["scenarios"].get("responsiveness", [])
    fronts = {"decoupled": ("Gradio", t.light_p99_ms), "node": ("Node", t.node_light_p99_ms)}
    for row in rows:
        if row["architecture"] not in fronts:
            continue
        kind, target = fronts[row["architecture"]]
        inside = [
            r["p99_ms"]
            for r in rows
            if r["model"] == row["model"] and r["architecture"] in ("gradio", "prototype")
        ]
        vs = f"; model-in-server p99 {max(inside):.0f} ms" if inside else ""
        holds = row["p99_ms"] <= target
        out.append(
            Verdict(
                f"{row['model']}: the {kind} front end's page stays responsive "
                f"(p99 <= {target:g} ms) while the model route is saturated",
                f"light route p99 {row['p99_ms']:.1f} ms{vs}",
                holds,
                "" if holds else reasons.slow_page(results, row),
            )
        )
    return out


def _node_throughput(results: dict[str, Any], t: Targets) -> list[Verdict]:
    users = top_users(results)
    out = []
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        node, service = (run_row(results, model, a, users) for a in ("node", "service"))
        if node is None or service is None or not service["rps"]:
            continue
        ratio = node["rps"] / service["rps"]
        holds = ratio >= t.node_share
        out.append(
            Verdict(
                f"{model}, {users} users: the Node front end in front of the service keeps "
                f">= {t.node_share:g}x the service's req/s alone",
                f"{node['rps']:.0f} vs {service['rps']:.0f} req/s ({ratio:.2f}x)",
                holds,
                "" if holds else reasons.front_end_cost(node, service),
            )
        )
    return out


def _updates(results: dict[str, Any], t: Targets) -> list[Verdict]:
    out = []
    for up in results["scenarios"].get("update", []):
        dec, ins = up["decoupled"], up["in_server"]
        swap = dec["seconds_to_new_version"]
        out.append(
            Verdict(
                f"{up['model']}: decoupled, a promoted version answers live with 0 failed requests "
                f"within the poll interval + {t.swap_slack_s:g} s",
                f"{dec['failed']} failed of {dec['requests']}; new version after "
                f"{'never' if swap is None else f'{swap:.1f} s'} (poll {dec['poll_s']:g} s)",
                dec["failed"] == 0 and swap is not None and swap <= dec["poll_s"] + t.swap_slack_s,
            )
        )
        out.append(
            Verdict(
                f"{up['model']}: model-in-server, a model update means a restart that clients feel",
                f"{ins['failed']} failed of {ins['requests']}; "
                f"{ins['seconds_without_service']:.1f} s without a successful answer",
                ins["failed"] > 0 or ins["seconds_without_service"] > t.restart_gap_s,
            )
        )
    return out


def _memory(results: dict[str, Any], t: Targets) -> list[Verdict]:
    out = []
    for mem in results["scenarios"].get("memory", []):
        top = mem["rows"][-1]
        out.append(
            Verdict(
                f"{mem['model']}: {top['n']} thin front ends + 1 service use <= "
                f"{t.memory_ratio * 100:g} % of the memory of {top['n']} model-in-server replicas",
                f"{top['decoupled_mb']:.0f} MB vs {top['in_server_mb']:.0f} MB "
                f"({top['ratio']:.0%})",
                top["ratio"] <= t.memory_ratio,
                reasons.memory(mem),
            )
        )
        out.append(
            Verdict(
                f"{mem['model']}: the remote-mode front end stays <= {t.front_end_mb:g} MB",
                f"{mem['front_end_mb']:.0f} MB (a replica with the model: "
                f"{mem['in_server_replica_mb']:.0f} MB; the service: {mem['service_mb']:.0f} MB)",
                mem["front_end_mb"] <= t.front_end_mb,
            )
        )
        out.append(
            Verdict(
                f"{mem['model']}: the service (BentoML's arbiter and worker) stays <= "
                f"{t.service_mb:g} MB",
                f"{mem['service_mb']:.0f} MB",
                mem["service_mb"] <= t.service_mb,
            )
        )
    return out


def _projections(results: dict[str, Any], t: Targets) -> list[Verdict]:
    out = []
    for p in projections(results):
        error = p["measured_rps"] / p["shared_core_rps"] - 1
        out.append(
            Verdict(
                f"{p['model']}: the CPU-cost model predicts the measured front end + service pair "
                f"within {t.projection_error * 100:g} %",
                f"{p['shared_core_rps']:.0f} req/s projected (front end {p['front_end_ms']:.2f} + "
                f"service {p['service_ms']:.2f} CPU ms per request on one core) vs "
                f"{p['measured_rps']:.0f} measured ({error:+.0%}; "
                f"the core {p['core_busy']:.0%} busy)",
                abs(error) <= t.projection_error,
                "the shared core was not busy: latency, not CPU, bounded the pair"
                if p["core_busy"] < 0.9
                else "",
            )
        )
    return out
