"""The report's charts (matplotlib, headless): throughput and p99 per architecture, answers
per second through a model update, memory of N replicas both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARCHITECTURE_ORDER = [
    "limit",
    "gradio",
    "prototype",
    "asgi",
    "mlflow",
    "bentoml-batchable",
    "litserve",
    "decoupled",
    "node",
    "bare",
    "service",
]


def draw(results: dict[str, Any], out: Path) -> list[Path]:
    """Throughput and p99 per model, the update timelines and memory bars, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    paths = [
        _throughput(results, model, out)
        for model in dict.fromkeys(r["model"] for r in results["runs"])
    ]
    paths += [_update(up, out) for up in results["scenarios"].get("update", [])]
    paths += [_memory(mem, out) for mem in results["scenarios"].get("memory", [])]
    generation = results.get("generation", [])
    paths += [_streams(generation, m, out) for m in dict.fromkeys(r["model"] for r in generation)]
    return paths


def _streams(rows: list[dict[str, Any]], model: str, out: Path) -> Path:
    """A generative model: tokens/s and time to first token p99 against concurrent streams."""
    import matplotlib.pyplot as plt

    from proto2prod.benchmarks.streams import ARCHITECTURES, NAMES

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arch in ARCHITECTURES:
        mine = sorted(
            (r for r in rows if r["model"] == model and r["architecture"] == arch),
            key=lambda r: r["streams"],
        )
        xs = [r["streams"] for r in mine]
        left.plot(xs, [r["tokens_per_s"] for r in mine], marker="o", label=NAMES[arch])
        right.plot(xs, [r["ttft_p99_ms"] for r in mine], marker="o", label=NAMES[arch])
    left.set(title=f"{model}: tokens/s", xlabel="concurrent streams", ylabel="tokens/s")
    right.set(
        title=f"{model}: time to first token, p99",
        xlabel="concurrent streams",
        ylabel="ms",
        yscale="log",
    )
    left.legend(fontsize=8)
    return _save(fig, out / f"{model}-streams.png")


def _throughput(results: dict[str, Any], model: str, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arch in ARCHITECTURE_ORDER[1:]:
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
        r["rps"] for r in results["runs"] if r["model"] == model and r["architecture"] == "limit"
    ]
    if limits:
        left.axhline(max(limits), color="grey", linestyle="--", label="raw limit")
    left.set(title=f"{model}: throughput", xlabel="concurrent users", ylabel="req/s")
    right.set(title=f"{model}: p99 latency", xlabel="concurrent users", ylabel="ms", yscale="log")
    left.legend(fontsize=8)
    return _save(fig, out / f"{model}-throughput.png")


def _update(up: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(11, 4.5), sharex=True)
    for ax, (key, label) in zip(
        axes,
        (("in_server", "model-in-server (restart)"), ("decoupled", "decoupled (live swap)")),
        strict=True,
    ):
        timeline = up[key]["timeline"]
        times = [row[0] for row in timeline["rows"]]
        colours = ["tab:blue", "tab:green", "tab:red"]
        for col, (name, colour) in enumerate(zip(timeline["columns"], colours, strict=False)):
            counts = [row[col + 1] / timeline["width_s"] for row in timeline["rows"]]
            text = "failed" if name == "failed" else f"version {name}"
            ax.step(times, counts, where="post", color=colour, label=text)
        ax.axvline(0, color="grey", linestyle="--")
        ax.set(ylabel="answers/s", title=label)
        ax.legend(fontsize=7, loc="right")
    axes[-1].set_xlabel("seconds since the new version was promoted")
    return _save(fig, out / f"{up['model']}-update.png")


def _memory(mem: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

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
    return _save(fig, out / f"{mem['model']}-memory.png")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
