"""The report: results.json in; report.md and a self-contained report.html out.

Both are rendered from one list of blocks (headings, paragraphs, tables, images), so the
HTML has real tables and each chart once, and the two never disagree.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from proto2prod.benchmarks import charts
from proto2prod.benchmarks.blocks import Block, Heading, Image, Table, Text
from proto2prod.benchmarks.charts import ARCHITECTURE_ORDER
from proto2prod.benchmarks.projections import FRONT_END_CORES, projections
from proto2prod.benchmarks.report_scenarios import scenario_blocks
from proto2prod.benchmarks.verdicts import verdicts

ARCHITECTURES_EXPLAINED = (
    "Architectures: `limit` raw in-process forward passes (no HTTP); `gradio` "
    "`gr.Interface(...).launch()` with Gradio's defaults, model inside; `prototype` "
    "proto2prod's Gradio app in-process; `asgi` a plain Starlette app with the model inside, "
    "on the same uvicorn stack as the service (uvloop + httptools); `mlflow` `mlflow models "
    "serve` of the same version; `bentoml-batchable` the same model behind BentoML's own "
    "`@bentoml.api(batchable=True)`; `service` the proto2prod BentoML service called "
    "directly; `decoupled` the prototype in remote mode in front of the service; `node` the "
    "Node.js front end (examples/web-node) in front of the service, its light route "
    "`/healthz`; `bare` raw "
    "ASGI and an asyncio micro-batcher (32 items, 1 ms) around MLflow's pyfunc of the same "
    "version, the service's own overhead's reference; `litserve` LitServe around the same "
    "pyfunc. Gradio apps are called as their page calls them (upload, then the queued route)."
)


def blocks(results: dict[str, Any], chart_paths: list[Path]) -> list[Block]:
    m, settings = results["machine"], results["settings"]
    loop = f"open loop at {settings['rate']} req/s" if settings["rate"] else "closed loop"
    out: list[Block] = [
        Heading("proto2prod benchmark", 1),
        Text(
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; Python "
            f"{m['python']}. Placement: {results['placement']}; torch threads 1 in every "
            f"server. Device: {settings.get('device') or 'cpu'}."
        ),
        Text("Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + "."),
        Text(
            f"Settings: {settings['duration']} s per point after a {settings['warmup']} s "
            f"warm-up, payload {settings['payload']}, {loop}, Locust workers "
            f"{settings['workers'] or 'none (one process)'}."
        ),
        Text(_loadgen_note(results)),
        Heading("Verdicts"),
        Table(
            ("claim", "numbers", "verdict", "why not"),
            [(v.claim, v.numbers, v.word, v.reason) for v in verdicts(results)],
        ),
    ]
    if results["runs"]:
        out += [Heading("Throughput and latency"), _throughput_table(results)]
    out += _projection_blocks(results)
    out += scenario_blocks(results)
    out += [Heading("Charts"), *(Image(p) for p in chart_paths), Text(ARCHITECTURES_EXPLAINED)]
    return out


def _loadgen_note(results: dict[str, Any]) -> str:
    rows = [r for r in results["runs"] if r["architecture"] != "limit"]
    busiest = max((r.get("loadgen_cpu", 0) for r in rows), default=0)
    saturated = [
        f"{r['model']} {r['architecture']} at {r['users']} users"
        for r in rows
        if r.get("loadgen_saturated")
    ]
    note = (
        f"Load generator: Locust, pinned apart from the servers; its busiest point used "
        f"{busiest:.2f} of a core."
    )
    if saturated:
        return note + " It was the limit (>= 90 % of its cores) at: " + ", ".join(saturated) + "."
    return note + " It was not the limit at any point."


def _throughput_table(results: dict[str, Any]) -> Table:
    rows = []
    for row in sorted(
        results["runs"],
        key=lambda r: (r["model"], ARCHITECTURE_ORDER.index(r["architecture"]), r["users"]),
    ):
        if row["architecture"] == "limit":
            rows.append(
                (
                    row["model"],
                    f"limit (batch {row['users']})",
                    "-",
                    f"{row['rps']:.0f}",
                    *["-"] * 7,
                )
            )
            continue
        share = row["rps"] / row["limit_samples_per_s"] if row.get("limit_samples_per_s") else 0
        flag = " (saturated)" if row.get("loadgen_saturated") else ""
        cpu = row.get("server_cpu") or {}
        per_request = ", ".join(
            f"{role} {1000 * cores / row['rps']:.2f}" for role, cores in cpu.items() if row["rps"]
        )
        rows.append(
            (
                row["model"],
                row["architecture"],
                str(row["users"]),
                f"{row['rps']:.1f}",
                f"{row['p50_ms']:.1f}",
                f"{row['p95_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                str(row["errors"]),
                f"{share:.0%}",
                per_request or "-",
                f"{row.get('loadgen_cpu', 0):.2f}{flag}",
            )
        )
    header = (
        "model",
        "architecture",
        "users",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "% of limit",
        "server CPU ms per request",
        "load gen CPU",
    )
    return Table(header, rows)


def _projection_blocks(results: dict[str, Any]) -> list[Block]:
    found = projections(results)
    if not found:
        return []
    out: list[Block] = [
        Heading("Scaling past this machine: k front-end cores before one service"),
        Text(
            "From the CPU each process spent per request at the decoupled point (front end "
            "and service sharing one core here). On separate cores each side scales apart: "
            "k front-end cores serve k / (front-end CPU per request), one service core 1 / "
            "(its CPU per request when saturated, from the `service` point). On a GPU the "
            "forward pass leaves the CPU (the raw "
            "limit's time per item is taken off the service's). The shared-core figure is "
            "checked against the measured point in the verdicts; the others need more cores "
            "than this machine has, so they are projections, not measurements."
        ),
    ]
    for p in found:
        header = ("service", *(f"{k} front-end core{'s' * (k > 1)}" for k in FRONT_END_CORES))
        out += [
            Text(
                f"{p['model']} at {p['users']} users ({p['point']}): front end "
                f"{p['front_end_ms']:.2f} CPU ms "
                f"per request, service {p['service_ms']:.2f}; measured {p['measured_rps']:.0f} "
                f"req/s on one shared core, projected {p['shared_core_rps']:.0f}. The service "
                f"alone, saturated: {p['saturated_service_ms']:.2f} CPU ms per request (forward "
                f"pass {p['forward_ms']:.2f} per item at the best batch)."
            ),
            Table(
                header,
                [
                    ("1 CPU core", *(f"{p['cpu_service'][k]:.0f}" for k in FRONT_END_CORES)),
                    ("1 GPU", *(f"{p['gpu_service'][k]:.0f}" for k in FRONT_END_CORES)),
                ],
            ),
        ]
    return out


def markdown(parts: list[Block]) -> str:
    lines: list[str] = []
    for part in parts:
        if isinstance(part, Heading):
            lines += ["#" * part.level + " " + part.text, ""]
        elif isinstance(part, Text):
            lines += [part.text, ""]
        elif isinstance(part, Table):
            lines += ["| " + " | ".join(part.header) + " |", "|" + "---|" * len(part.header)]
            lines += [
                "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                for row in part.rows
            ]
            lines.append("")
        else:
            lines += [f"![{part.path.stem}]({part.path.name})", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's `code` spans as <code>; everything else escaped."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def page(parts: list[Block]) -> str:
    body: list[str] = []
    for part in parts:
        if isinstance(part, Heading):
            body.append(f"<h{part.level}>{_inline(part.text)}</h{part.level}>")
        elif isinstance(part, Text):
            body.append(f"<p>{_inline(part.text)}</p>")
        elif isinstance(part, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in part.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                for row in part.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            data = base64.b64encode(part.path.read_bytes()).decode()
            body.append(f'<img alt="{part.path.stem}" src="data:image/png;base64,{data}">')
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
        "th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}"
    )
    return (
        "<!doctype html><meta charset=utf-8><title>proto2prod benchmark</title>"
        f"<style>{style}</style>" + "\n".join(body)
    )


def write(results: dict[str, Any], out: Path) -> list[Path]:
    chart_paths = charts.draw(results, out)
    parts = blocks(results, chart_paths)
    (out / "report.md").write_text(markdown(parts))
    (out / "report.html").write_text(page(parts))
    return [out / "results.json", out / "report.md", out / "report.html", *chart_paths]
