"""The architectures under test, each started as real processes on free loopback ports.

Every target is a context manager: its processes run in their own sessions and are killed
(whole process groups) when the block ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from proto2prod.processes import free_port, kill, spawn, wait_http

__all__ = ["Placement", "Target", "free_port", "kill", "process", "start", "wait_http"]

BIN = Path(sys.executable).parent
IMAGE_ONLY = {"gradio", "prototype", "decoupled"}  # called through Gradio's upload route


@dataclass
class Target:
    """How to call one running architecture."""

    name: str
    url: str
    kind: str  # "json" (POST {"inputs": [item]}) or "gradio" (upload + queued call)
    path: str  # route, or the Gradio api name
    light_path: str  # a light GET route of the web front end
    processes: dict[str, int] = field(default_factory=dict)
    """role ("server", or "front end" and "service") -> pid: whose CPU a point measures."""


@dataclass(frozen=True)
class Placement:
    """Which cores the servers and the load generator run on."""

    server_cpus: str | None
    load_cpus: str | None

    @classmethod
    def detect(cls) -> Placement:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        half = max(1, len(cpus) // 2)
        return cls(",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:])))

    def server(self, args: list[str]) -> list[str]:
        return ["taskset", "-c", self.server_cpus, *args] if self.server_cpus else args

    def load(self, args: list[str]) -> list[str]:
        return ["taskset", "-c", self.load_cpus, *args] if self.load_cpus else args

    def describe(self) -> str:
        if self.server_cpus is None:
            return "not pinned (fewer than 2 cores, or no taskset)"
        return f"servers on cpu {self.server_cpus}, load generator on cpu {self.load_cpus}"


@contextlib.contextmanager
def process(args: list[str], ready: str, log: Path, env: dict[str, str]) -> Iterator[int]:
    proc = spawn(args, log, env)
    try:
        wait_http(ready, proc, log)
        yield proc.pid
    finally:
        kill(proc)


@contextlib.contextmanager
def start(
    name: str,
    model: str,
    entry: str,
    *,
    home: Path,
    logs: Path,
    placement: Placement,
    threads: int = 1,
    concurrency: int | None = None,
    device: str | None = None,
    half: bool = False,
) -> Iterator[Target]:
    """Run architecture `name` for registered model `model` (served as MODEL@production);
    `entry` is its definition, for the in-process prototype. `concurrency` is the remote
    front end's Gradio queue limit (None: its default, 0: no limit); `device` and `half`
    go to every server that runs the model (PROTO2PROD_DEVICE, PROTO2PROD_HALF)."""
    ref = f"{model}@production"
    env = {
        **os.environ,
        "PROTO2PROD_HOME": str(home),
        "PROTO2PROD_TORCH_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "BENTOML_DO_NOT_TRACK": "true",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "PROTO2PROD_HALF": "1" if half else "0",
    }
    if device:
        env["PROTO2PROD_DEVICE"] = device
    env.pop("MLFLOW_TRACKING_URI", None)
    py = sys.executable
    p2p = [py, "-m", "proto2prod.cli"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = logs / f"{model}-{name}.log"
    with contextlib.ExitStack() as stack:
        if name in ("service", "decoupled"):
            svc_port = port if name == "service" else free_port()
            svc_url = f"http://127.0.0.1:{svc_port}"
            args = placement.server([*p2p, "serve", ref, "--port", str(svc_port)])
            pid = stack.enter_context(
                process(args, f"{svc_url}/readyz", logs / f"{model}-{name}-service.log", env)
            )
            if name == "service":
                yield Target(name, url, "json", "/predict", "/livez", {"service": pid})
                return
            queue = [] if concurrency is None else ["--concurrency", str(concurrency)]
            args = placement.server(
                [*p2p, "prototype", "--backend", svc_url, "--port", str(port), *queue]
            )
            ui = stack.enter_context(process(args, url, log, env))
            yield Target(name, url, "gradio", "predict", "/", {"front end": ui, "service": pid})
            return
        if name == "prototype":
            args = placement.server(
                [
                    *p2p,
                    "prototype",
                    entry,
                    "--model",
                    ref,
                    "--port",
                    str(port),
                ]
            )
            pid = stack.enter_context(process(args, url, log, env))
            yield Target(name, url, "gradio", "predict", "/", {"server": pid})
            return
        if name in ("gradio", "asgi"):
            args = placement.server(
                [py, "-m", "proto2prod.benchmarks.apps.model_app", name, ref, str(port)]
            )
            ready = url if name == "gradio" else f"{url}/health"
            pid = stack.enter_context(process(args, ready, log, env))
            if name == "gradio":
                yield Target(name, url, "gradio", "predict", "/", {"server": pid})
            else:
                yield Target(name, url, "json", "/predict", "/health", {"server": pid})
            return
        if name == "bentoml-batchable":
            env["PROTO2PROD_BENCH_REF"] = ref
            service = "proto2prod.benchmarks.apps.bentoml_batchable:Batchable"
            args = placement.server(
                [str(BIN / "bentoml"), "serve", service, "--host", "127.0.0.1", "--port", str(port)]
            )
            pid = stack.enter_context(process(args, f"{url}/readyz", log, env))
            yield Target(name, url, "json", "/predict", "/livez", {"server": pid})
            return
        if name == "mlflow":
            env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
            args = placement.server(
                [
                    str(BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{ref}",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-w",
                    "1",
                ]
            )
            pid = stack.enter_context(process(args, f"{url}/ping", log, env))
            yield Target(name, url, "json", "/invocations", "/ping", {"server": pid})
            return
        raise ValueError(f"unknown architecture {name!r}")
