"""The GPU run card: what a CUDA machine does with a model, in one command.

    proto2prod bench --device cuda --models heavy,textgen --out docs/benchmarks  # make gpu-card

For each precision (float32, then float16): the raw limit at batch 1 and batched (no
HTTP), then the service on that GPU at each user count. Written as `gpu.md` (+ `gpu.json`)
into the output folder. On a GPU the forward pass of a batch is cheap, so the card shows
how much of the device's batched limit the service's per-request work leaves. A
generative model (textgen) gets the report's streams table instead (benchmarks/streams.py).
"""

from __future__ import annotations

import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from proto2prod.benchmarks import models, runner, streams, targets
from proto2prod.benchmarks.context import Bench, Subject
from proto2prod.benchmarks.plan import Plan
from proto2prod.benchmarks.report import Heading, Table, Text, markdown
from proto2prod.benchmarks.report_scenarios import generation_blocks
from proto2prod.benchmarks.targets import Placement
from proto2prod.errors import DeviceUnavailable

LIMIT_BATCHES = [1, 8, 32, 128]
USERS = [1, 32, 128]
PRECISIONS = (("float32", False), ("float16", True))


def gpu_name(device: str) -> str:
    """The CUDA device's name; `DeviceUnavailable` (a one-line CLI error) without one."""
    import torch

    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"--device {device}: torch sees no CUDA device (torch {torch.__version__}); run "
            "the GPU card on a machine with a GPU and a CUDA build of torch"
        )
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        raise DeviceUnavailable(
            f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s); give "
            f"cuda or cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return torch.cuda.get_device_name(torch.device(device))


def card_plan(plan: Plan) -> Plan:
    """The card's own batches and users unless the command gave users of its own."""
    plan.limit_batches = LIMIT_BATCHES
    if plan.users == [1, 8, 32] and not plan.quick:  # the bench's default: take the card's
        plan.users = USERS
    plan.scenarios = []
    return plan


def _precision(
    bench: Bench, subject: Subject, device: str, precision: str, half: bool, results: dict[str, Any]
) -> None:
    """The raw limit, then the service at each user count, in one precision."""
    plan, model = bench.plan, subject.name
    bench.say(f"{model} {precision}: the raw limit on {device}")
    limit = runner.measure_limit(
        model, subject.payload, plan, bench.home, bench.placement, device=device, half=half
    )
    results["limits"].append({"model": model, "precision": precision, "samples_per_s": limit})
    bench.say(f"{model} {precision}: the service on {device}")
    start = partial(targets.start, home=bench.home, logs=bench.logs, placement=bench.placement)
    with start("service", model, subject.entry, device=device, half=half) as t:
        for users in plan.users:
            point = bench.measure(t, subject.payload, users=users, workers=plan.workers)
            results["runs"].append(
                {
                    "model": model,
                    "precision": precision,
                    "users": users,
                    "rps": point.model.rps,
                    "p50_ms": point.model.p50_ms,
                    "p99_ms": point.model.p99_ms,
                    "errors": point.model.errors,
                    "limit_samples_per_s": max(limit.values()),
                    "loadgen_cpu": round(point.loadgen_cpu, 3),
                    "server_cpu": point.server_cpu,
                }
            )


def run(plan: Plan, out: Path, say: runner.Say, *, gpu: str | None = None) -> dict[str, Any]:
    """The card for `plan.device`; `gpu` is the device's name when the caller has it (the
    CLI asks before starting anything; the test runs the whole card on the CPU)."""
    device = plan.device or "cuda"
    results: dict[str, Any] = {
        "machine": {**runner.machine(), "gpu": gpu or gpu_name(device)},
        "device": device,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "limits": [],
        "runs": [],
    }
    placement = Placement.detect()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="p2p-gpu-card-") as tmp:
        bench = Bench(plan, Path(tmp) / "home", out / "logs", Path(tmp), placement, say)
        runner.register(plan, bench.home, say)
        for model in plan.models:
            entry = plan.entries[model]
            if models.generates(entry):  # tokens/s and time to first token, as the report's
                streams.measure(bench, Subject(model, entry, Path(tmp)), results)
                continue
            payload = runner.write_payload(model, entry, plan.payload, Path(tmp))
            for precision, half in PRECISIONS:
                _precision(bench, Subject(model, entry, payload), device, precision, half, results)
                (out / "gpu.json").write_text(json.dumps(results, indent=1))
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "gpu.json").write_text(json.dumps(results, indent=1))
    (out / "gpu.md").write_text(render(results))
    return results


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    limits = Table(
        ("model", "precision", *(f"batch {b}" for b in LIMIT_BATCHES)),
        [
            (
                r["model"],
                r["precision"],
                *(f"{r['samples_per_s'].get(str(b), 0):.0f}" for b in LIMIT_BATCHES),
            )
            for r in results["limits"]
        ],
    )
    service = Table(
        (
            "model",
            "precision",
            "users",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "% of limit",
            "load gen CPU",
        ),
        [
            (
                r["model"],
                r["precision"],
                str(r["users"]),
                f"{r['rps']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                str(r["errors"]),
                f"{r['rps'] / r['limit_samples_per_s']:.0%}",
                f"{r['loadgen_cpu']:.2f}",
            )
            for r in results["runs"]
        ],
    )
    return markdown(
        [
            Heading("proto2prod GPU run card", 1),
            Text(
                f"GPU: {m['gpu']} ({results['device']}); CPU: {m['cpu']}, {m['cores']} cores; "
                f"torch {m['versions'].get('torch')}; measured {results['started']}."
            ),
            Heading("Raw limit (samples/s, forward pass and postprocessing, no HTTP)"),
            limits,
            Heading("The service on the GPU (one JSON item per request, closed loop)"),
            service,
            *generation_blocks(results.get("generation", [])),
            Text(
                "Made by `make gpu-card` (`proto2prod bench --device cuda --models heavy,textgen`)."
            ),
        ]
    )
