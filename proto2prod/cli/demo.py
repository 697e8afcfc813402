"""`proto2prod demo`: the migration journey on the embedded registry, end to end.

Train digits and register it as digits@production, list its versions, start the service
on it as a real process, answer one request and print a curl line that works, start the
Gradio prototype in remote mode in front of the service, print both URLs, then serve until
Ctrl-C, a `kill` or a closed terminal, and stop everything it started.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time

import typer

from proto2prod.cli.output import console, err_console
from proto2prod.processes import Stopped, kill, spawn, stopped_by_signals, wait_http
from proto2prod.settings import Settings

EXAMPLE = "proto2prod.examples.digits:Digits"


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


def run_demo(port: int, ui_port: int, once: bool) -> None:
    from proto2prod.client import Client
    from proto2prod.definition import load_definition

    p2p = [sys.executable, "-m", "proto2prod.cli"]
    subprocess.run([*p2p, "train", EXAMPLE, "--alias", "production"], check=True)
    subprocess.run([*p2p, "versions", "digits"], check=True)

    port, ui_port = port_or_free(port), port_or_free(ui_port)
    url, ui_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    logs = Settings.from_env().home
    logs.mkdir(parents=True, exist_ok=True)
    console.print(f"starting the service on digits@production at {url} (log: {logs}/)")
    service = spawn(
        [*p2p, "serve", "digits@production", "--port", str(port)], logs / "demo-service.log"
    )
    ui: subprocess.Popen[bytes] | None = None
    try:
        wait_http(f"{url}/readyz", service, logs / "demo-service.log", timeout=180)
        example = load_definition(EXAMPLE, check=False).model.examples()[2]
        body = json.dumps({"inputs": [example]}, separators=(",", ":"))
        with Client(url) as client:
            answer = client.predict([example])
        curl = (
            f"curl -s -X POST {url}/predict -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)}"
        )
        console.print("\n[bold]The service answers[/] (a held-out 7):")
        console.print(curl, soft_wrap=True, highlight=False, markup=False)
        said = {"outputs": answer.outputs, "model": answer.model, "version": answer.version}
        console.print(
            json.dumps(said, separators=(",", ":")), soft_wrap=True, highlight=False, markup=False
        )
        console.print("\nstarting the Gradio prototype in remote mode, in front of the service")
        ui = spawn(
            [*p2p, "prototype", "--backend", url, "--port", str(ui_port)], logs / "demo-ui.log"
        )
        wait_http(ui_url, ui, logs / "demo-ui.log", timeout=180)
        console.print(f"\nservice:  {url}  (docs {url}/docs, metadata {url}/metadata)")
        console.print(f"UI:       {ui_url}  (Gradio, answers from the service)")
        if once:
            return
        console.print("Ctrl-C stops everything.")
        while service.poll() is None and ui.poll() is None:
            time.sleep(0.5)
        raise RuntimeError(f"a demo process stopped on its own; see the logs in {logs}")
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM/SIGHUP as `Stopped`
        console.print(f"stopping ({stop})" if isinstance(stop, Stopped) else "stopping")
        if isinstance(stop, Stopped):
            raise
    finally:
        for proc in (ui, service):
            if proc is not None:
                kill(proc, grace=20)


def demo(
    port: int = typer.Option(3000, help="Port for the service (a free one if busy)."),
    ui_port: int = typer.Option(7860, help="Port for the Gradio UI (a free one if busy)."),
    once: bool = typer.Option(False, help="Stop once everything answered (a smoke test)."),
) -> None:
    """Train digits, register it, serve it, and put the Gradio UI in front of the service."""
    try:
        with stopped_by_signals():
            run_demo(port, ui_port, once)
    except Stopped as stop:
        raise typer.Exit(stop.exit_code) from None
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
