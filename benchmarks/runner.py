"""The benchmark run: register the models, start each architecture, load it, collect.

The machine's speed drifts within minutes, so the raw limit is measured again right before
each architecture and every ratio uses that adjacent figure (all of them are kept).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from proto2prod.benchmarks import (
    fleet_scenario,
    load,
    models,
    rollouts,
    scenarios,
    streams,
    targets,
)
from proto2prod.benchmarks.context import Bench, Subject
from proto2prod.benchmarks.plan import EXAMPLES, SCENARIOS, Plan
from proto2prod.benchmarks.targets import IMAGE_ONLY, Placement

Say = Callable[[str], None]


def machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in ("proto2prod", "torch", "bentoml", "gradio", "streamlit", "mlflow", "locust"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def register(plan: Plan, home: Path, say: Say) -> None:
    """Train each example (briefly with --quick): version 1 is NAME@production, version 2
    (a short retraining) is the update that the update scenario promotes. A `--model REF`
    is copied from the user's registry instead, twice."""
    env = {**os.environ, "PROTO2PROD_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    quick = plan.quick
    for model in plan.models:
        if model in plan.refs:
            say(f"copying {plan.refs[model]} from your registry")
            models.import_version(plan.refs[model], home)
            continue
        say(f"training and registering {model}")
        train = [sys.executable, "-m", "proto2prod.cli", "train", EXAMPLES[model]]
        first = [*train, "--alias", "production", *(["--quick"] if quick else [])]
        subprocess.run(first, env=env, check=True, capture_output=True)
        subprocess.run([*train, "--quick"], env=env, check=True, capture_output=True)


def write_payload(model: str, entry: str, kind: str, folder: Path) -> Path:
    """The items every architecture gets: the model's examples, as a browser sends them."""
    from proto2prod.definition import load_definition

    definition = load_definition(entry, check=False).model
    items = definition.examples()
    if kind == "png":
        items = [definition.inputs.browser_item(i) for i in items]
    path = folder / f"{model}-{kind}.json"
    path.write_text(json.dumps(items))
    return path


def measure_limit(
    model: str,
    payload: Path,
    plan: Plan,
    home: Path,
    placement: Placement,
    *,
    device: str | None = None,
    half: bool = False,
) -> dict[str, float]:
    env = {
        **os.environ,
        "PROTO2PROD_HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "PROTO2PROD_HALF": "1" if half else "0",
    }
    if device:
        env["PROTO2PROD_DEVICE"] = device
    env.pop("MLFLOW_TRACKING_URI", None)
    args = placement.server(
        [
            sys.executable,
            "-c",
            "import torch; torch.set_num_threads(1); "
            "from proto2prod.benchmarks.limit import main; main()",
            f"{model}@production",
            str(payload),
            str(plan.limit_seconds),
            *map(str, plan.limit_batches),
        ]
    )
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    return {k: float(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def run(plan: Plan, out: Path, say: Say) -> dict[str, Any]:
    """Every architecture x user count for every model; returns (and writes) results.json."""
    placement = Placement.detect()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "placement": placement.describe(),
        "settings": {**asdict(plan), "torch_threads": 1},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": [],
        "limits": [],
        "scenarios": {name: [] for name in ("responsiveness", *SCENARIOS)},
    }
    with tempfile.TemporaryDirectory(prefix="p2p-bench-") as tmp:
        bench = Bench(plan, Path(tmp) / "home", logs, Path(tmp), placement, say)
        register(plan, bench.home, say)
        for model in plan.models:
            entry = plan.entries[model]
            if models.generates(entry):  # its own architectures: concurrent streams
                streams.measure(bench, Subject(model, entry, Path(tmp)), results)
                _save(results, out)
                continue
            subject = Subject(model, entry, write_payload(model, entry, plan.payload, Path(tmp)))
            for arch in plan.architectures:
                if arch in IMAGE_ONLY and not plan.images(model):
                    say(f"{model}: skipping {arch} (it is called through an image upload)")
                    continue
                if arch == "litserve" and importlib.util.find_spec("litserve") is None:
                    say(f"{model}: skipping litserve (not installed: pip install litserve)")
                    continue
                if arch == "node" and shutil.which("node") is None:
                    say(f"{model}: skipping node (no Node.js on PATH)")
                    continue
                _measure_architecture(bench, subject, arch, results, out)
            _scenarios(bench, subject, results)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _save(results, out)
    return results


def _measure_architecture(
    bench: Bench, subject: Subject, arch: str, results: dict[str, Any], out: Path
) -> None:
    """The raw limit next to `arch`, then `arch` at each user count (saved after each)."""
    plan, model, say = bench.plan, subject.name, bench.say
    say(f"{model}: measuring the raw limit next to {arch}")
    limit = measure_limit(
        model, subject.payload, plan, bench.home, bench.placement, device=plan.device
    )
    results["limits"].append({"model": model, "before": arch, "samples_per_s": limit})
    for batch, value in limit.items():
        results["runs"].append(_run_row(model, "limit", int(batch), value, None))
    say(f"{model}: starting {arch}")
    start = partial(targets.start, home=bench.home, logs=bench.logs, placement=bench.placement)
    with start(arch, model, subject.entry, device=plan.device) as t:
        for users in plan.users:
            light = users == max(plan.users)
            say(f"{model}: {arch} with {users} users")
            point = bench.measure(
                t, subject.payload, users=users, workers=plan.workers, rate=plan.rate, light=light
            )
            row = _run_row(model, arch, users, point.model.rps, point)
            row["limit_samples_per_s"] = max(limit.values())
            results["runs"].append(row)
            _save(results, out)  # a stopped run keeps what it measured
            if light and point.light is not None:
                results["scenarios"]["responsiveness"].append(
                    {
                        "model": model,
                        "architecture": arch,
                        "users": users,
                        "light_route": t.light_path,
                        "p50_ms": point.light.p50_ms,
                        "p99_ms": point.light.p99_ms,
                        "requests": point.light.requests,
                        "errors": point.light.errors,
                    }
                )


SCENARIO_RUNS: dict[str, tuple[Callable[[Bench, Subject], dict[str, Any]], str]] = {
    "update": (scenarios.update, "promoting version 2 under load (restart vs live swap)"),
    "queue": (scenarios.queue, "the remote front end's Gradio queue, three limits"),
    "shadow": (rollouts.shadow, "the service's throughput with a shadow at rate 1.0, and without"),
    "drift": (rollouts.drift, "the service's throughput with drift tracking off, and on"),
    "webhook": (rollouts.webhook, "promotions by MLflow webhook, then by poll"),
    "memory": (scenarios.memory, "resident memory of N replicas, both ways"),
    "fleet": (fleet_scenario.run, "1, 2 and 3 replicas behind HAProxy; promotions to all"),
}
"""Each scenario, in the order they run, and what it says while it runs."""
NEEDS_IMAGE = {"update", "queue", "memory"}
"""Scenarios that go through the Gradio upload route (models whose one input is an image)."""


def _scenarios(bench: Bench, subject: Subject, results: dict[str, Any]) -> None:
    for name, (scenario, what) in SCENARIO_RUNS.items():
        if name not in bench.plan.scenarios:
            continue
        if name in NEEDS_IMAGE and not bench.plan.images(subject.name):
            continue
        if name in ("webhook", "fleet") and subject.name in bench.plan.refs:
            continue  # trains its own versions on its own mlflow server
        bench.say(f"{subject.name}: {what}")
        results["scenarios"][name].append(scenario(bench, subject))


def _save(results: dict[str, Any], out: Path) -> None:
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out / "results.json")


def _run_row(
    model: str, arch: str, users: int, rps: float, point: load.Point | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "architecture": arch, "users": users, "rps": rps}
    if point is None:
        row.update(p50_ms=None, p95_ms=None, p99_ms=None, errors=0)
        return row
    row.update(
        p50_ms=point.model.p50_ms,
        p95_ms=point.model.p95_ms,
        p99_ms=point.model.p99_ms,
        max_ms=point.model.max_ms,
        errors=point.model.errors,
        requests=point.model.requests,
        loadgen_cpu=round(point.loadgen_cpu, 3),
        loadgen_saturated=point.saturated,
        server_cpu={role: round(cores, 3) for role, cores in point.server_cpu.items()},
    )
    return row
