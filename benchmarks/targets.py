"""The architectures under test, each started as real processes on free loopback ports.

Every target is a context manager: its processes run in their own sessions and are killed
(whole process groups) when the block ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Iterator
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


@dataclass(frozen=True)
class Launch:
    """What starting one architecture needs: its model, environment, port and logs."""

    name: str
    model: str
    entry: str
    env: dict[str, str]
    port: int
    logs: Path
    placement: Placement
    home: Path
    concurrency: int | None

    @property
    def ref(self) -> str:
        return f"{self.model}@production"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.logs / f"{self.model}-{self.name}.log"

    def run(self, stack: contextlib.ExitStack, args: list[str], ready: str, **env: str) -> int:
        """Start `args` on the servers' cores; its pid once `ready` answers 200."""
        environ = {**self.env, **env}
        return stack.enter_context(process(self.placement.server(args), ready, self.log, environ))


P2P = [sys.executable, "-m", "proto2prod.cli"]


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
    starter = STARTERS.get(name)
    if starter is None:
        raise ValueError(f"unknown architecture {name!r}")
    env = {
        **os.environ,
        "PROTO2PROD_HOME": str(home),
        "PROTO2PROD_TORCH_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "BENTOML_DO_NOT_TRACK": "true",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "PROTO2PROD_HALF": "1" if half else "0",
        **({"PROTO2PROD_DEVICE": device} if device else {}),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    launch = Launch(name, model, entry, env, free_port(), logs, placement, home, concurrency)
    with contextlib.ExitStack() as stack:
        yield starter(launch, stack)


def _service(launch: Launch, stack: contextlib.ExitStack) -> Target:
    args = [*P2P, "serve", launch.ref, "--port", str(launch.port)]
    pid = launch.run(stack, args, f"{launch.url}/readyz")
    return Target(launch.name, launch.url, "json", "/predict", "/livez", {"service": pid})


def _stepping(launch: Launch, stack: contextlib.ExitStack) -> Target:
    """A generative model's service: `steps` batches decoding steps across 32 sequences,
    `one-at-a-time` generates one sequence at a time (PROTO2PROD_MAX_SEQUENCES=1)."""
    sequences = "32" if launch.name == "steps" else "1"
    args = [*P2P, "serve", launch.ref, "--port", str(launch.port)]
    ready = f"{launch.url}/readyz"
    pid = launch.run(stack, args, ready, PROTO2PROD_MAX_SEQUENCES=sequences)
    return Target(launch.name, launch.url, "json", "/generate", "/livez", {"service": pid})


def _decoupled(launch: Launch, stack: contextlib.ExitStack) -> Target:
    """The prototype in remote mode in front of the service."""
    svc = dataclasses.replace(launch, name="decoupled-service", port=free_port())
    service = _service(svc, stack)
    queue = [] if launch.concurrency is None else ["--concurrency", str(launch.concurrency)]
    args = [*P2P, "prototype", "--backend", svc.url, "--port", str(launch.port), *queue]
    ui = launch.run(stack, args, launch.url)
    roles = {"front end": ui, "service": service.processes["service"]}
    return Target(launch.name, launch.url, "gradio", "predict", "/", roles)


def _node(launch: Launch, stack: contextlib.ExitStack) -> Target:
    """The Node.js front end (examples/web-node) in front of the service: a thin front end
    in another language, on the same cores as the service (as `decoupled`'s Gradio)."""
    svc = dataclasses.replace(launch, name="node-service", port=free_port())
    service = _service(svc, stack)
    folder = web_node(launch.home)
    args = [node_binary(), str(folder / "server.js")]
    env = {"SERVICE_URL": svc.url, "PORT": str(launch.port), "HOST": "127.0.0.1"}
    front = launch.run(stack, args, f"{launch.url}/healthz", **env)
    roles = {"front end": front, "service": service.processes["service"]}
    return Target(launch.name, launch.url, "json", "/predict", "/healthz", roles)


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        raise FileNotFoundError(
            "the node architecture runs examples/web-node with Node.js 20 or newer, and no "
            "`node` is on PATH; install Node.js, or leave node out of --architectures"
        )
    return found


def web_node(home: Path) -> Path:
    """The Node example copied under `home` with its packages (`npm ci`, once per home)."""
    import subprocess

    from proto2prod import examples

    folder = home / "web-node"
    if not (folder / "node_modules").is_dir():
        source = Path(examples.__file__).parent / "web-node"
        skipped = shutil.ignore_patterns("node_modules")
        shutil.copytree(source, folder, dirs_exist_ok=True, ignore=skipped)
        npm = shutil.which("npm") or "npm"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--omit=dev"],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return folder


def _prototype(launch: Launch, stack: contextlib.ExitStack) -> Target:
    args = [*P2P, "prototype", launch.entry, "--model", launch.ref, "--port", str(launch.port)]
    pid = launch.run(stack, args, launch.url)
    return Target(launch.name, launch.url, "gradio", "predict", "/", {"server": pid})


def _model_app(launch: Launch, stack: contextlib.ExitStack) -> Target:
    """The peers in benchmarks/apps/model_app.py: Gradio's defaults, plain ASGI, bare."""
    app = [sys.executable, "-m", "proto2prod.benchmarks.apps.model_app"]
    args = [*app, launch.name, launch.ref, str(launch.port)]
    if launch.name == "gradio":
        pid = launch.run(stack, args, launch.url)
        return Target(launch.name, launch.url, "gradio", "predict", "/", {"server": pid})
    pid = launch.run(stack, args, f"{launch.url}/health")
    return Target(launch.name, launch.url, "json", "/predict", "/health", {"server": pid})


def _pyfunc_app(launch: Launch, stack: contextlib.ExitStack) -> Target:
    """`bare` (raw ASGI + an asyncio micro-batcher) and `litserve`, each around MLflow's
    own pyfunc of the version (benchmarks/apps/bare.py, litserve_app.py)."""
    module = {"bare": "bare", "litserve": "litserve_app"}[launch.name]
    args = [sys.executable, "-m", f"proto2prod.benchmarks.apps.{module}"]
    args += [launch.ref, str(launch.port)]
    tracking = f"sqlite:///{launch.home / 'mlflow.db'}"
    pid = launch.run(stack, args, f"{launch.url}/health", MLFLOW_TRACKING_URI=tracking)
    return Target(launch.name, launch.url, "json", "/predict", "/health", {"server": pid})


def _batchable(launch: Launch, stack: contextlib.ExitStack) -> Target:
    service = "proto2prod.benchmarks.apps.bentoml_batchable:Batchable"
    args = [str(BIN / "bentoml"), "serve", service, "--host", "127.0.0.1"]
    args += ["--port", str(launch.port)]
    pid = launch.run(stack, args, f"{launch.url}/readyz", PROTO2PROD_BENCH_REF=launch.ref)
    return Target(launch.name, launch.url, "json", "/predict", "/livez", {"server": pid})


def _mlflow(launch: Launch, stack: contextlib.ExitStack) -> Target:
    args = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{launch.ref}"]
    args += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(launch.port), "-w", "1"]
    tracking = f"sqlite:///{launch.home / 'mlflow.db'}"
    pid = launch.run(stack, args, f"{launch.url}/ping", MLFLOW_TRACKING_URI=tracking)
    return Target(launch.name, launch.url, "json", "/invocations", "/ping", {"server": pid})


STARTERS: dict[str, Callable[[Launch, contextlib.ExitStack], Target]] = {
    "service": _service,
    "steps": _stepping,
    "one-at-a-time": _stepping,
    "decoupled": _decoupled,
    "node": _node,
    "prototype": _prototype,
    "gradio": _model_app,
    "asgi": _model_app,
    "bentoml-batchable": _batchable,
    "mlflow": _mlflow,
    "bare": _pyfunc_app,
    "litserve": _pyfunc_app,
}
"""How each architecture starts (benchmarks/plan.py lists them for the CLI)."""
