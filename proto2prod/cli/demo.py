"""`proto2prod demo`: the migration journey on the embedded registry, end to end.

Train digits and register it as digits@production, list its versions, start the service
on it as a real process, answer one request, print a curl line that works, then serve
until Ctrl-C and stop everything it started.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import typer

from proto2prod.cli.output import console, err_console

EXAMPLE = "examples.digits:Digits"


def port_or_free(port: int) -> int:
    """`port` if nothing listens on it, else a free one (said on the console)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            s.bind(("127.0.0.1", 0))
            free = int(s.getsockname()[1])
    console.print(f"port {port} is busy: using {free}")
    return free


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode}; see its log")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the service at {url} was not ready after {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_demo(port: int, once: bool) -> None:
    import httpx

    from proto2prod.definition import load_definition

    p2p = [sys.executable, "-m", "proto2prod.cli"]
    subprocess.run([*p2p, "train", EXAMPLE, "--alias", "production"], check=True)
    subprocess.run([*p2p, "versions", "digits"], check=True)

    port = port_or_free(port)
    url = f"http://127.0.0.1:{port}"
    log = Path(os.environ.get("PROTO2PROD_HOME", ".proto2prod")) / "demo-service.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"starting the service on digits@production at {url} (log: {log})")
    with log.open("wb") as out:
        service = subprocess.Popen(
            [*p2p, "serve", "digits@production", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_ready(url, service)
        example = load_definition(EXAMPLE, check=False).model.examples()[2]
        body = json.dumps({"inputs": [example]}, separators=(",", ":"))
        answer = httpx.post(f"{url}/predict", content=body, timeout=30,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        answer.raise_for_status()
        curl = (
            f"curl -s -X POST {url}/predict -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)}"
        )
        console.print("\n[bold]The service answers[/] (a held-out 7):")
        console.print(curl, soft_wrap=True, highlight=False, markup=False)
        console.print(answer.text, soft_wrap=True, highlight=False, markup=False)
        console.print(f"\nservice: {url}  docs: {url}/docs  metadata: {url}/metadata")
        if once:
            return
        console.print("Ctrl-C stops everything.")
        while service.poll() is None:
            time.sleep(0.5)
        raise RuntimeError(f"the service stopped with code {service.returncode}; see {log}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop(service)


def demo(
    port: int = typer.Option(3000, help="Port for the service (a free one if busy)."),
    once: bool = typer.Option(False, help="Stop after the first answer (for tests)."),
) -> None:
    """Train digits, register it as digits@production, serve it, and answer one request."""
    try:
        run_demo(port, once)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
