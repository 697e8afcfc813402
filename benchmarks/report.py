"""The report: results.json in, verdicts, report.md, a self-contained report.html, charts."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORDER = ["limit", "gradio", "prototype", "asgi", "mlflow", "decoupled", "service"]


@dataclass(frozen=True)
class Verdict:
    claim: str
    numbers: str
    holds: bool | None  # None: not measured in this run

    @property
    def word(self) -> str:
        return {True: "holds", False: "does not hold here", None: "not measured"}[self.holds]


def _run(results: dict[str, Any], model: str, arch: str, users: int) -> dict[str, Any] | None:
    for row in results["runs"]:
        if (row["model"], row["architecture"], row["users"]) == (model, arch, users):
            return dict(row)
    return None


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    """Each claim against this run's numbers, at the highest user count measured."""
    out: list[Verdict] = []
    users = max((r["users"] for r in results["runs"] if r["architecture"] != "limit"), default=0)
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        service = _run(results, model, "service", users)
        if service is None:
            continue
        limit = service.get("limit_samples_per_s") or 0
        share = service["rps"] / limit if limit else 0
        out.append(
            Verdict(
                f"{model}, {users} users: the service reaches >= 90 % of the raw batched limit",
                f"{service['rps']:.0f} req/s vs limit {limit:.0f} samples/s ({share:.0%})",
                share >= 0.9,
            )
        )
        for peer, factor in (("gradio", 6.0), ("mlflow", 2.5), ("asgi", 1.0)):
            other = _run(results, model, peer, users)
            if other is None:
                continue
            ratio = service["rps"] / other["rps"] if other["rps"] else float("inf")
            out.append(
                Verdict(
                    f"{model}, {users} users: the service serves >= {factor:g}x `{peer}`",
                    f"{service['rps']:.0f} vs {other['rps']:.0f} req/s ({ratio:.1f}x)",
                    ratio >= factor,
                )
            )
        if service["p50_ms"]:
            tail = service["p99_ms"] / service["p50_ms"]
            out.append(
                Verdict(
                    f"{model}, {users} users: service p99 <= 1.5x p50",
                    f"p50 {service['p50_ms']:.1f} ms, p99 {service['p99_ms']:.1f} ms ({tail:.2f}x)",
                    tail <= 1.5,
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
    for row in results["scenarios"].get("responsiveness", []):
        if row["architecture"] == "decoupled":
            inside = [
                r
                for r in results["scenarios"]["responsiveness"]
                if r["model"] == row["model"] and r["architecture"] in ("gradio", "prototype")
            ]
            worst = max((r["p99_ms"] for r in inside), default=None)
            vs = f"; model-in-server p99 {worst:.0f} ms" if worst is not None else ""
            out.append(
                Verdict(
                    f"{row['model']}: the decoupled front end's page stays responsive "
                    f"(p99 <= 50 ms) while the model route is saturated",
                    f"light route p99 {row['p99_ms']:.1f} ms{vs}",
                    row["p99_ms"] <= 50,
                )
            )
    for up in results["scenarios"].get("update", []):
        dec, ins = up["decoupled"], up["in_server"]
        swap = dec["seconds_to_new_version"]
        out.append(
            Verdict(
                f"{up['model']}: decoupled, a promoted version answers live with 0 failed requests "
                f"within the poll interval + 5 s",
                f"{dec['failed']} failed of {dec['requests']}; new version after "
                f"{'never' if swap is None else f'{swap:.1f} s'} (poll {dec['poll_s']:g} s)",
                dec["failed"] == 0 and swap is not None and swap <= dec["poll_s"] + 5,
            )
        )
        out.append(
            Verdict(
                f"{up['model']}: model-in-server, a model update means a restart that clients feel",
                f"{ins['failed']} failed of {ins['requests']}; "
                f"{ins['seconds_without_service']:.1f} s without a successful answer",
                ins["failed"] > 0 or ins["seconds_without_service"] > 1.0,
            )
        )
    for mem in results["scenarios"].get("memory", []):
        top = mem["rows"][-1]
        out.append(
            Verdict(
                f"{mem['model']}: {top['n']} thin front ends + 1 service use <= 50 % of the "
                f"memory of {top['n']} model-in-server replicas",
                f"{top['decoupled_mb']:.0f} MB vs {top['in_server_mb']:.0f} MB "
                f"({top['ratio']:.0%})",
                top["ratio"] <= 0.5,
            )
        )
        out.append(
            Verdict(
                f"{mem['model']}: the remote-mode front end stays <= 300 MB",
                f"{mem['front_end_mb']:.0f} MB (a replica with the model: "
                f"{mem['in_server_replica_mb']:.0f} MB; the service: {mem['service_mb']:.0f} MB)",
                mem["front_end_mb"] <= 300,
            )
        )
        out.append(
            Verdict(
                f"{mem['model']}: the service (BentoML's arbiter and worker) stays <= 700 MB",
                f"{mem['service_mb']:.0f} MB",
                mem["service_mb"] <= 700,
            )
        )
    return out


def charts(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for arch in ORDER[1:]:
            rows = sorted(
                (r for r in results["runs"] if r["model"] == model and r["architecture"] == arch),
                key=lambda r: r["users"],
            )
            if not rows:
                continue
            xs = [r["users"] for r in rows]
            left.plot(xs, [r["rps"] for r in rows], marker="o", label=arch)
            right.plot(xs, [r["p99_ms"] for r in rows], marker="o", label=arch)
        limits = [
            r["rps"]
            for r in results["runs"]
            if r["model"] == model and r["architecture"] == "limit"
        ]
        if limits:
            left.axhline(max(limits), color="grey", linestyle="--", label="raw limit")
        left.set(title=f"{model}: throughput", xlabel="concurrent users", ylabel="req/s")
        right.set(
            title=f"{model}: p99 latency", xlabel="concurrent users", ylabel="ms", yscale="log"
        )
        left.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{model}-throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    for up in results["scenarios"].get("update", []):
        fig, axes = plt.subplots(2, 1, figsize=(11, 4.5), sharex=True)
        for ax, (key, label) in zip(
            axes,
            (("in_server", "model-in-server (restart)"), ("decoupled", "decoupled (live swap)")),
            strict=True,
        ):
            events = up[key]["timeline"]
            for version, colour in ((up["from"], "tab:blue"), (up["to"], "tab:green")):
                ts = [t for t, ok, v in events if ok and v == version]
                ax.scatter(ts, [1] * len(ts), s=4, color=colour, label=f"version {version}")
            failed = [t for t, ok, _ in events if not ok]
            ax.scatter(failed, [0] * len(failed), s=8, color="tab:red", label="failed")
            ax.axvline(0, color="grey", linestyle="--")
            ax.set(yticks=[0, 1], yticklabels=["failed", "ok"], title=label)
            ax.legend(fontsize=7, loc="right")
        axes[-1].set_xlabel("seconds since the new version was promoted")
        fig.tight_layout()
        path = out / f"{up['model']}-update.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    for mem in results["scenarios"].get("memory", []):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ns = [r["n"] for r in mem["rows"]]
        width = 0.38
        ax.bar(
            [n - width / 2 for n in range(len(ns))],
            [r["in_server_mb"] for r in mem["rows"]],
            width,
            label="N web processes with the model",
        )
        ax.bar(
            [n + width / 2 for n in range(len(ns))],
            [r["decoupled_mb"] for r in mem["rows"]],
            width,
            label="N thin front ends + 1 service",
        )
        ax.set(
            xticks=range(len(ns)),
            xticklabels=[f"N={n}" for n in ns],
            ylabel="MB resident",
            title=f"{mem['model']}: memory",
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{mem['model']}-memory.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def markdown(results: dict[str, Any], chart_paths: list[Path]) -> str:
    m, settings = results["machine"], results["settings"]
    loop = f"open loop at {settings['rate']} req/s" if settings["rate"] else "closed loop"
    lines = [
        "# proto2prod benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; Python {m['python']}.",
        f"Placement: {results['placement']}; torch threads 1 in every server.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
        f"Settings: {settings['duration']} s per point after a {settings['warmup']} s warm-up, "
        f"payload {settings['payload']}, {loop}, "
        f"Locust workers {settings['workers'] or 'none (one process)'}.",
        "",
        "## Verdicts",
        "",
        "| claim | numbers | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| {v.claim} | {v.numbers} | {v.word} |" for v in verdicts(results)]
    lines += [
        "",
        "## Throughput and latency",
        "",
        "| model | architecture | users | req/s | p50 ms | p95 ms | p99 ms | errors "
        "| % of limit | load gen CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(
        results["runs"], key=lambda r: (r["model"], ORDER.index(r["architecture"]), r["users"])
    ):
        if row["architecture"] == "limit":
            lines.append(
                f"| {row['model']} | limit (batch {row['users']}) | - | {row['rps']:.0f} "
                "| - | - | - | - | - | - |"
            )
            continue
        share = row["rps"] / row["limit_samples_per_s"] if row.get("limit_samples_per_s") else 0
        flag = " (saturated)" if row.get("loadgen_saturated") else ""
        lines.append(
            f"| {row['model']} | {row['architecture']} | {row['users']} | {row['rps']:.1f} "
            f"| {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} "
            f"| {share:.0%} | {row.get('loadgen_cpu', 0):.2f}{flag} |"
        )
    resp = results["scenarios"].get("responsiveness", [])
    if resp:
        lines += [
            "",
            "## Responsiveness of a light route under saturated model load",
            "",
            "| model | architecture | users | light route | p50 ms | p99 ms | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['architecture']} | {r['users']} | `{r['light_route']}` "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
            for r in resp
        ]
    for up in results["scenarios"].get("update", []):
        dec, ins = up["decoupled"], up["in_server"]
        lines += [
            "",
            f"## Model update under load: {up['model']} {up['from']} -> {up['to']}",
            "",
            "| architecture | failed requests | answered | seconds without service "
            "| seconds until the new version answers |",
            "|---|---|---|---|---|",
            f"| model-in-server (restart) | {ins['failed']} | {ins['requests']} "
            f"| {ins['seconds_without_service']:.1f} | {_s(ins['seconds_to_new_version'])} |",
            f"| decoupled (live swap, poll {dec['poll_s']:g} s) | {dec['failed']} "
            f"| {dec['requests']} | 0.0 | {_s(dec['seconds_to_new_version'])} |",
        ]
    for mem in results["scenarios"].get("memory", []):
        lines += [
            "",
            f"## Memory: {mem['model']} (resident, whole process trees)",
            "",
            "| N | N web processes with the model (MB) | N thin front ends + 1 service (MB) "
            "| ratio |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['n']} | {r['in_server_mb']:.0f} | {r['decoupled_mb']:.0f} | {r['ratio']:.0%} |"
            for r in mem["rows"]
        ]
        lines += [
            "",
            f"One service: {mem['service_mb']:.0f} MB; one thin front end: "
            f"{mem['front_end_mb']:.0f} MB; one replica with the model: "
            f"{mem['in_server_replica_mb']:.0f} MB. RSS counts shared pages in each "
            "process, so both sides are over-counted alike.",
        ]
    lines += ["", "## Charts", ""] + [f"![{p.stem}]({p.name})" for p in chart_paths]
    lines += [
        "",
        "Architectures: `limit` raw in-process forward passes (no HTTP); `gradio` "
        "`gr.Interface(...).launch()` with Gradio's defaults, model inside; `prototype` "
        "proto2prod's Gradio app in-process; `asgi` a plain Starlette app with the model "
        "inside; `mlflow` `mlflow models serve` of the same version; `service` the "
        "proto2prod BentoML service called directly; `decoupled` the prototype in remote "
        "mode in front of the service. Gradio apps are called as their page calls them "
        "(upload, then the queued route).",
        "",
    ]
    return "\n".join(lines)


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}"


def write(results: dict[str, Any], out: Path) -> list[Path]:
    chart_paths = charts(results, out)
    text = markdown(results, chart_paths)
    (out / "report.md").write_text(text)
    body = html.escape(text)
    for path in chart_paths:
        data = base64.b64encode(path.read_bytes()).decode()
        body = body.replace(
            html.escape(f"![{path.stem}]({path.name})"),
            f'<img alt="{path.stem}" src="data:image/png;base64,{data}">',
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>proto2prod benchmark</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "pre{white-space:pre-wrap}</style><pre>" + body + "</pre>"
    )
    (out / "report.html").write_text(page)
    return [out / "results.json", out / "report.md", out / "report.html", *chart_paths]
