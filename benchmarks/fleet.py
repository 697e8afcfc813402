"""A fleet on one machine: N replicas of the service behind HAProxy, as real processes.

What running past one machine looks like, made small enough to start in a test and in the
benchmark: each replica is a `proto2prod serve` with its own home (its own weight cache,
as separate machines would have) and `PROTO2PROD_PEERS` naming every replica (itself
included: a replica drops its own events, as one behind a DNS name must); HAProxy
balances them round-robin, health-checked on `/readyz` every `CHECK_MS`, and retries a
request another replica refused at connection time (a replica stopping). A rolling
restart SIGTERMs one replica at a time: its `/readyz` turns 503 for
`PROTO2PROD_DRAIN_S` while it still serves, HAProxy takes it out, then it stops.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proto2prod.processes import free_port, kill, spawn, wait_http

CHECK_MS = 200
"""HAProxy's health-check interval: a draining replica is out within about this."""
DRAIN_S = 1.0
"""Each replica's drain on SIGTERM: several health checks, so HAProxy sees it first."""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError(
            "a fleet is balanced by HAProxy, and no `haproxy` is installed: "
            "apt-get install haproxy (Debian), brew install haproxy (macOS)"
        )
    return found


def haproxy_config(port: int, replicas: list[int]) -> str:
    """Round-robin over `replicas` (loopback ports), checked on `/readyz`; a request whose
    connection a replica refused, or that it answered 503 while draining, goes to another
    (a /predict is idempotent)."""
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(replicas, start=1)
    )
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503

frontend fleet
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {CHECK_MS}ms fastinter {CHECK_MS}ms downinter {CHECK_MS}ms fall 1 rise 2
{servers}
"""


@dataclass
class Replica:
    """One `proto2prod serve`, restartable on its port (each start logs to its own file)."""

    port: int
    argv: list[str]
    env: dict[str, str]
    folder: Path
    name: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self.proc = spawn(self.argv, self.log, self.env)

    def wait(self, timeout: float = 180) -> None:
        assert self.proc is not None, "start() it first"
        wait_http(f"{self.url}/readyz", self.proc, self.log, timeout)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM (the drain), then wait for the process to end."""
        if self.proc is not None:
            kill(self.proc, grace)
            self.proc = None


@dataclass
class Fleet:
    url: str
    """The balancer's base URL: what clients call."""
    replicas: list[Replica]
    balancer: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    """Seconds each rolling restart's replica took from SIGTERM to ready again."""

    def restart_one(self, replica: Replica) -> None:
        """Drain and stop `replica`, start it again, and wait until HAProxy has it back."""
        began = time.monotonic()
        replica.stop()
        replica.start()
        replica.wait()
        time.sleep(3 * CHECK_MS / 1000)  # `rise 2` health checks before it takes requests
        self.restarts.append(time.monotonic() - began)

    def rolling_restart(self) -> None:
        for replica in self.replicas:
            self.restart_one(replica)


@contextlib.contextmanager
def fleet(
    ref: str,
    count: int,
    folder: Path,
    env: dict[str, str],
    *,
    peers: bool = True,
    argv: list[str] | None = None,
) -> Iterator[Fleet]:
    """`count` replicas of `ref` (each with `env`; with a tracking server, each its own home
    under `folder`) behind HAProxy; with `peers`, every replica's PROTO2PROD_PEERS names
    them all."""
    balancer = haproxy_binary()
    folder.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(count)]
    peer_list = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    command = argv or [sys.executable, "-m", "proto2prod.cli"]
    replicas = []
    for i, port in enumerate(ports, start=1):
        replica_env = {**env, "PROTO2PROD_DRAIN_S": str(DRAIN_S)}
        if "MLFLOW_TRACKING_URI" in env:  # a registry of its own: its own cache, as a machine
            replica_env["PROTO2PROD_HOME"] = str(folder / f"replica-{i}")
        if peers:
            replica_env["PROTO2PROD_PEERS"] = peer_list
        args = [*command, "serve", ref, "--port", str(port)]
        replicas.append(Replica(port, args, replica_env, folder, f"replica-{i}"))
    front = free_port()
    config = folder / "haproxy.cfg"
    config.write_text(haproxy_config(front, ports))
    made = Fleet(f"http://127.0.0.1:{front}", replicas)
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait()
        made.balancer = spawn([balancer, "-db", "-f", str(config)], folder / "haproxy.log")
        wait_http(f"{made.url}/readyz", made.balancer, folder / "haproxy.log", 30)
        yield made
    finally:
        for replica in replicas:
            replica.stop(grace=10)
        if made.balancer is not None:
            kill(made.balancer, 5)


@contextlib.contextmanager
def steady_load(url: str, items: list[Any], clients: int = 2) -> Iterator[Counter[str]]:
    """`clients` threads calling /predict through `url` until the block ends: the Counter
    holds each answer's status (or exception name) and `v<version>` per version answered,
    so a promotion or a restart under it shows any request it failed."""
    import httpx

    seen: Counter[str] = Counter()
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    answer = client.post(f"{url}/predict", json={"inputs": items})
                    seen[str(answer.status_code)] += 1
                    if answer.status_code == 200:
                        seen["v" + answer.json()["version"]] += 1
                except httpx.HTTPError as exc:
                    seen[type(exc).__name__] += 1

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield seen
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def failed(seen: Counter[str]) -> int:
    """The requests in `seen` that did not answer 200."""
    return sum(n for key, n in seen.items() if not key.startswith("v") and key != "200")


def time_to_all(
    replicas: list[Replica], items: list[Any], version: str, timeout: float = 60
) -> float | None:
    """Seconds until every replica, asked directly, answers `version` (None: not within
    `timeout`); probed every 20 ms."""
    import httpx

    began = time.monotonic()
    with httpx.Client(timeout=10) as client:
        while time.monotonic() - began < timeout:
            answers = [
                client.post(f"{r.url}/predict", json={"inputs": items}).headers.get(
                    "X-Model-Version"
                )
                for r in replicas
            ]
            if all(a == version for a in answers):
                return time.monotonic() - began
            time.sleep(0.02)
    return None
