"""Generative models under concurrent streams: tokens per second and time to first token.

Three ways to serve the same registered version, each at 1, 8 and 32 concurrent streams
(Locust users, each streaming one text after another; benchmarks/locust_streams.py):

- `steps`: the service, decoding steps batched across requests (PROTO2PROD_MAX_SEQUENCES=32);
- `one-at-a-time`: the same service generating one sequence at a time (MAX_SEQUENCES=1);
- `prototype`: the model inside a Gradio app, streaming (model-in-server, its default
  concurrency of one call at a time).

Servers get the servers' cores and one torch thread, as every architecture does.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from proto2prod.benchmarks import hdr, load, targets
from proto2prod.benchmarks.context import Bench, Subject
from proto2prod.benchmarks.targets import Target, kill

LOCUSTFILE = Path(__file__).with_name("locust_streams.py")
ARCHITECTURES = ("steps", "one-at-a-time", "prototype")
NAMES = {
    "steps": "service, step batching",
    "one-at-a-time": "service, one sequence at a time",
    "prototype": "Gradio app, model in-process",
}
MAX_NEW_TOKENS = 64


def payload(subject: Subject, folder: Path) -> tuple[Path, list[str]]:
    """Items for the streams: the examples' prompts, each `MAX_NEW_TOKENS` long, sampled
    (temperature 0.8, a seed each), and the input names in the UI's order."""
    from proto2prod.definition import load_definition

    model = load_definition(subject.entry, check=False).model
    names = [name for name, _ in model.inputs.parts()]
    items = []
    for seed, example in enumerate(model.examples() * 4):
        item = {name: field.default for name, field in model.inputs.parts()}
        item |= {"max_new_tokens": MAX_NEW_TOKENS, "temperature": 0.8, "top_k": 0}
        items.append({**item, "prompt": example["prompt"], "seed": seed})
    path = folder / f"{subject.name}-streams.json"
    path.write_text(json.dumps([{k: v for k, v in i.items() if k in names} for i in items]))
    return path, names


def measure(bench: Bench, subject: Subject, results: dict[str, Any]) -> None:
    """Every architecture at every stream count; rows into `results["generation"]`."""
    path, names = payload(subject, bench.work)
    counts = [1, 4] if bench.plan.quick else [1, 8, 32]
    start = partial(targets.start, home=bench.home, logs=bench.logs, placement=bench.placement)
    rows = results.setdefault("generation", [])
    for arch in ARCHITECTURES:
        bench.say(f"{subject.name}: starting {arch}")
        with start(arch, subject.name, subject.entry, device=bench.plan.device) as target:
            for streams in counts:
                bench.say(f"{subject.name}: {arch} with {streams} streams")
                found = run(bench, target, path, names, streams)
                rows.append(
                    {"model": subject.name, "architecture": arch, "streams": streams, **found}
                )


def run(bench: Bench, target: Target, path: Path, names: list[str], streams: int) -> dict[str, Any]:
    """Locust streaming from `target` with `streams` users for the plan's duration."""
    plan = bench.plan
    out = Path(tempfile.mkstemp(prefix="p2p-streams-", suffix=".json")[1])
    env = {
        **os.environ,
        "P2P_KIND": target.kind,
        "P2P_PAYLOAD": str(path),
        "P2P_FIELDS": ",".join(names),
        "P2P_WARMUP_S": str(plan.warmup),
        "P2P_OUT": str(out),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    base = load.locust_command(target, streams, plan.warmup + plan.duration, LOCUSTFILE)
    log = Path(str(out) + ".log")
    procs = load.start_locust(base, ["StreamUser"], 0, bench.placement, env, log, LOCUSTFILE)
    try:
        loadgen_cpu, server_cpu = load.watch(procs, target, plan.warmup, plan.duration, None)
        collected: list[dict[str, Any]] = json.loads(out.read_text() or "[]")
        if not collected:
            raise RuntimeError(
                f"locust measured nothing against {target.url}:\n{log.read_text()[-2000:]}"
            )
    finally:
        for proc in procs:
            kill(proc)
        out.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
    ttft = hdr.summarize(hdr.merge([c["ttft"] for c in collected]), errors=0, seconds=plan.duration)
    tokens = sum(c["tokens"] for c in collected)
    return {
        "tokens_per_s": round(tokens / plan.duration, 1),
        "ttft_p50_ms": ttft.p50_ms,
        "ttft_p99_ms": ttft.p99_ms,
        "streams_done": sum(c["done"] for c in collected),
        "failed": sum(c["failed"] for c in collected),
        "loadgen_cpu": round(loadgen_cpu, 3),
        "server_cpu": {role: round(cores, 3) for role, cores in server_cpu.items()},
    }
