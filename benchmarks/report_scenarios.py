"""The report's sections for the scenarios beyond throughput: one function per scenario,
each turning its results into headings, tables and text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proto2prod.benchmarks.blocks import Block, Heading, Table, Text


def scenario_blocks(results: dict[str, Any]) -> list[Block]:
    """The sections of every scenario that ran, in the report's order."""
    scenarios = results["scenarios"]
    out: list[Block] = []
    if generation := results.get("generation", []):
        out += generation_blocks(generation)
    if resp := scenarios.get("responsiveness", []):
        out += _responsiveness(resp)
    for name, section in SECTIONS.items():
        for found in scenarios.get(name, []):
            out += section(found)
    return out


def generation_blocks(rows: list[dict[str, Any]]) -> list[Block]:
    """A generative model's streams (benchmarks/streams.py): the report's and the GPU card's."""
    from proto2prod.benchmarks.streams import NAMES

    return [
        Heading("Generation: concurrent streams"),
        Text(
            "Each stream generates 64 tokens (temperature 0.8), then the next starts; tokens "
            "counted as they arrive; time to first token from the request's send."
        ),
        Table(
            (
                "model",
                "served by",
                "streams",
                "tokens/s",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "done",
                "failed",
                "server CPU (cores)",
            ),
            [
                (
                    r["model"],
                    NAMES.get(r["architecture"], r["architecture"]),
                    str(r["streams"]),
                    f"{r['tokens_per_s']:.0f}",
                    f"{r['ttft_p50_ms']:.1f}",
                    f"{r['ttft_p99_ms']:.1f}",
                    str(r["streams_done"]),
                    str(r["failed"]),
                    f"{sum(r['server_cpu'].values()):.2f}",
                )
                for r in rows
            ],
        ),
    ]


def _responsiveness(resp: list[dict[str, Any]]) -> list[Block]:
    return [
        Heading("Responsiveness of a light route under saturated model load"),
        Table(
            ("model", "architecture", "users", "light route", "p50 ms", "p99 ms", "errors"),
            [
                (
                    r["model"],
                    r["architecture"],
                    str(r["users"]),
                    f"`{r['light_route']}`",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    str(r["errors"]),
                )
                for r in resp
            ],
        ),
    ]


def _queue(q: dict[str, Any]) -> list[Block]:
    return [
        Heading(f"The remote front end's Gradio queue: {q['model']}, {q['users']} users"),
        Text(
            "The remote front end's function waits on the service over HTTP; Gradio's "
            "docs advise a higher or no concurrency limit for such functions. Same "
            "service, same load, only `--concurrency` differs."
        ),
        Table(
            ("concurrency_limit", "req/s", "p50 ms", "p99 ms", "errors"),
            [
                (
                    str(r["concurrency"] or "none"),
                    f"{r['rps']:.1f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    str(r["errors"]),
                )
                for r in q["rows"]
            ],
        ),
    ]


def _update(up: dict[str, Any]) -> list[Block]:
    dec, ins = up["decoupled"], up["in_server"]
    return [
        Heading(f"Model update under load: {up['model']} {up['from']} -> {up['to']}"),
        Table(
            (
                "architecture",
                "failed requests",
                "answered",
                "seconds without service",
                "seconds until the new version answers",
            ),
            [
                (
                    "model-in-server (restart)",
                    str(ins["failed"]),
                    str(ins["requests"]),
                    f"{ins['seconds_without_service']:.1f}",
                    _s(ins["seconds_to_new_version"]),
                ),
                (
                    f"decoupled (live swap, poll {dec['poll_s']:g} s)",
                    str(dec["failed"]),
                    str(dec["requests"]),
                    "0.0",
                    _s(dec["seconds_to_new_version"]),
                ),
            ],
        ),
    ]


def _shadow(shadow: dict[str, Any]) -> list[Block]:
    return [
        Heading(f"Shadow traffic: {shadow['model']}, {shadow['users']} users"),
        Text(
            "The same service and load; with a shadow, every request is also sampled for "
            "the challenger, which runs after the champion has answered and only when no "
            "request waits for the model and the CPU is not busy (samples without such "
            "time are dropped and counted). Both services run side by side, loaded in "
            "turn A B B A; each row is the mean of its two runs (one in a quick run)."
        ),
        Table(
            (
                "shadow",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "compared items",
                "dropped requests",
            ),
            [
                (
                    r["mode"],
                    f"{r['rps']:.0f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    str(r["errors"]),
                    _n(r["compared"]),
                    _n(r["dropped"]),
                )
                for r in shadow["rows"]
            ],
        ),
    ]


def _drift(tracked: dict[str, Any]) -> list[Block]:
    return [
        Heading(f"Drift tracking: {tracked['model']}, {tracked['users']} users"),
        Table(
            ("drift tracking", "req/s", "p50 ms", "p99 ms", "errors"),
            [
                (
                    r["mode"],
                    f"{r['rps']:.0f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    str(r["errors"]),
                )
                for r in tracked["rows"]
            ],
        ),
    ]


def _webhook(hook: dict[str, Any]) -> list[Block]:
    return [
        Heading(f"Promotion to answer: {hook['model']}, MLflow webhook against poll"),
        Table(
            ("delivery", "poll s", "median s", "max s", "each promotion (s)"),
            [
                (
                    mode,
                    f"{hook[mode]['poll_s']:g}",
                    f"{hook[mode]['median_s']:.2f}",
                    f"{hook[mode]['max_s']:.2f}",
                    ", ".join(f"{s:.2f}" for s in hook[mode]["seconds"]),
                )
                for mode in ("webhook", "poll")
            ],
        ),
    ]


def _memory(mem: dict[str, Any]) -> list[Block]:
    return [
        Heading(f"Memory: {mem['model']} (resident, whole process trees)"),
        Table(
            (
                "N",
                "N web processes with the model (MB)",
                "N thin front ends + 1 service (MB)",
                "ratio",
            ),
            [
                (
                    str(r["n"]),
                    f"{r['in_server_mb']:.0f}",
                    f"{r['decoupled_mb']:.0f}",
                    f"{r['ratio']:.0%}",
                )
                for r in mem["rows"]
            ],
        ),
        Text(
            f"One service: {mem['service_mb']:.0f} MB; one thin front end: "
            f"{mem['front_end_mb']:.0f} MB; one replica with the model: "
            f"{mem['in_server_replica_mb']:.0f} MB. RSS counts shared pages in each "
            "process, so both sides are over-counted alike."
        ),
    ]


def _fleet(found: dict[str, Any]) -> list[Block]:
    peers, alone, restart = found["peers"], found["alone"], found["rolling_restart"]

    def seconds(values: list[float | None]) -> str:
        return ", ".join("-" if s is None else f"{s:.2f}" for s in values)

    return [
        Heading(f"A fleet behind HAProxy: {found['model']}, {found['users']} users"),
        Table(
            ("replicas", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms / request"),
            [
                (
                    str(r["replicas"]),
                    f"{r['rps']:.0f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    str(r["errors"]),
                    "-" if r["cpu_ms_per_request"] is None else f"{r['cpu_ms_per_request']:.2f}",
                )
                for r in found["rows"]
            ],
        ),
        Table(
            ("promotion reaches", "median s", "max s", "failed", "each promotion (s)"),
            [
                (
                    f"{label} (poll {p['poll_s']:g} s)",
                    "-" if p["median_s"] is None else f"{p['median_s']:.2f}",
                    "-" if p["max_s"] is None else f"{p['max_s']:.2f}",
                    f"{p['failed']} of {p['requests']}",
                    seconds(p["seconds"]),
                )
                for label, p in (("all, with PROTO2PROD_PEERS", peers), ("all, without", alone))
            ],
        ),
        Text(
            f"Rolling restart (SIGTERM, drain, start, back in the balancer), per replica: "
            f"{', '.join(f'{s:.1f}' for s in restart['seconds_per_replica'])} s; "
            f"{restart['failed']} of {restart['requests']} requests failed meanwhile. The "
            f"replicas share the servers' {found['server_cores']} core(s)."
        ),
    ]


SECTIONS: dict[str, Callable[[dict[str, Any]], list[Block]]] = {
    "queue": _queue,
    "update": _update,
    "shadow": _shadow,
    "drift": _drift,
    "webhook": _webhook,
    "memory": _memory,
    "fleet": _fleet,
}
"""Each scenario's section, in the report's order."""


def _n(count: int | None) -> str:
    return "-" if count is None else str(count)


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}"
