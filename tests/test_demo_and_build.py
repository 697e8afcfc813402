"""The README's `make demo` journey and the Bento build, run for real."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT
from tests.processes import free_port
from tests.service_process import until

pytestmark = pytest.mark.server


class Demo:
    """`proto2prod demo` as a person runs it (no --once), its output read line by line."""

    def __init__(self, tmp_path: Path) -> None:
        env = {**os.environ, "PROTO2PROD_HOME": str(tmp_path / "home")}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.port, self.ui_port = free_port(), free_port()
        args = ["demo", "--port", str(self.port), "--ui-port", str(self.ui_port)]
        self.proc = subprocess.Popen(
            [str(BIN / "proto2prod"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, "BENTOML_DO_NOT_TRACK": "true"},
            cwd=tmp_path,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(self.lines)
            time.sleep(0.1)

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)  # the demo process alone, as `kill` or a terminal does
        code = self.proc.wait(60)
        self._reader.join(10)
        return code

    def service_started(self) -> bool:
        return bool(_on_port(self.port))

    def assert_nothing_left(self) -> None:
        for p in (self.port, self.ui_port):
            assert not _on_port(p), f"left running on port {p}: {_on_port(p)!r}"
            assert p == _bind(p)


def test_demo_trains_serves_answers_and_a_closed_terminal_stops_all_it_started(
    tmp_path: Path,
) -> None:
    """The journey, then SIGHUP once everything answers: the service and the UI (in sessions
    of their own, so the hang-up never reaches them) are stopped by the demo, their ports
    free again."""
    demo = Demo(tmp_path)
    demo.wait_for("Ctrl-C stops everything.")
    out = "".join(demo.lines)
    assert "registered digits version 1 with alias @production" in out
    assert "digits (1 versions)" in out  # the versions table: its title ...
    assert re.search(r"│ 1\s+│ @production\s+│ accuracy=0\.\d+", out), out  # ... and a row
    assert "curl -s -X POST http://127.0.0.1:" in out
    assert '"label":"7"' in out and '"version":"1"' in out
    assert f"UI:       http://127.0.0.1:{demo.ui_port}" in out
    assert demo.stop(signal.SIGHUP) == 128 + signal.SIGHUP
    assert any("stopping (SIGHUP)" in line for line in demo.lines), demo.lines
    demo.assert_nothing_left()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_kill_or_ctrl_c_while_the_service_starts_stops_it(
    tmp_path: Path, signum: signal.Signals
) -> None:
    demo = Demo(tmp_path)
    demo.wait_for("starting the service on digits@production")
    until(demo.service_started, 60, "the service's process")  # started, not yet answering
    code = demo.stop(signum)
    assert code == (128 + signum if signum == signal.SIGTERM else 0), "".join(demo.lines)
    demo.assert_nothing_left()


def _on_port(port: int) -> bytes:
    """The pids of processes started with `--port PORT` (the demo's children)."""
    found = subprocess.run(["pgrep", "-f", "--", f"--port {port}( |$)"], capture_output=True)
    return found.stdout.strip()


def _bind(port: int) -> int:
    """Bind `port` as a server restarting on it would (SO_REUSEADDR): fails only while a
    socket still holds it, not for the closed connections the OS keeps in TIME_WAIT."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return int(s.getsockname()[1])


def test_serve_refuses_a_bad_reference() -> None:
    done = subprocess.run(
        [str(BIN / "proto2prod"), "serve", "digits@@x"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "not a model reference" in done.stderr


def test_build_from_an_editable_install_carries_a_wheel_built_from_source(tmp_path: Path) -> None:
    """This checkout's proto2prod is editable: `build` makes its wheel from the source tree
    (the user-project test covers the installed-wheel path). No registry is needed when the
    definition is given."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    env["PROTO2PROD_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [
            str(BIN / "proto2prod"),
            "build",
            "digits@production",
            "--definition",
            str(ROOT / "examples" / "digits.py"),
            "--version",
            "t1",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "built Bento digits:t1" in done.stdout
    bento = tmp_path / "bentoml" / "bentos" / "digits" / "t1"
    manifest = (bento / "bento.yaml").read_text()
    assert "service: proto2prod.service.app:ModelService" in manifest
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in manifest and "digits@production" in manifest
    (wheel,) = (bento / "src" / "wheels").glob("proto2prod-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top_level = z.read("proto2prod-0.1.0.dist-info/top_level.txt").decode().split()
    assert top_level == ["proto2prod"]
    assert "proto2prod/service/app.py" in names and "proto2prod/examples/digits.py" in names
    assert f"./wheels/{wheel.name}" in (bento / "env" / "python" / "requirements.txt").read_text()
    # ... and beside that requirements file, where an image's install resolves the line
    assert (bento / "env" / "python" / "wheels" / wheel.name).is_file()
    assert sorted(p.name for p in (bento / "src").iterdir()) == [
        "bentofile.yaml",
        "digits.py",
        "setup.sh",  # the image's cache folder for the non-root user (service/bento.py)
        "wheels",
    ]
