"""The README's `make demo` journey and the Bento build, run for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT
from tests.processes import free_port

pytestmark = pytest.mark.server


def test_demo_trains_registers_serves_and_answers(tmp_path: Path) -> None:
    env = {**os.environ, "PROTO2PROD_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    port, ui_port = free_port(), free_port()
    done = subprocess.run(
        [str(BIN / "proto2prod"), "demo", "--once", "--port", str(port), "--ui-port", str(ui_port)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "registered digits version 1 with alias @production" in done.stdout
    assert "@production" in done.stdout  # the versions table
    assert "curl -s -X POST http://127.0.0.1:" in done.stdout
    assert '"label":"7"' in done.stdout and '"version":"1"' in done.stdout
    assert f"UI:       http://127.0.0.1:{ui_port}" in done.stdout
    # Nothing it started is left: no service process, and the port is free again.
    for p in (port, ui_port):
        leftovers = subprocess.run(["pgrep", "-f", "--", f"--port {p}( |$)"], capture_output=True)
        assert leftovers.stdout == b""
        assert p == _bind(p)


def _bind(port: int) -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        return int(s.getsockname()[1])


def test_serve_refuses_a_bad_reference() -> None:
    done = subprocess.run(
        [str(BIN / "proto2prod"), "serve", "digits@@x"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "not a model reference" in done.stderr


def test_bentoml_build_makes_a_bento(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PROTO2PROD_MODEL": "digits@production",
        "PROTO2PROD_DEFINITION": "examples/digits.py",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "."],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    bentos = list((tmp_path / "bentoml" / "bentos" / "proto2prod").glob("*/bento.yaml"))
    assert len(bentos) == 1
    manifest = bentos[0].read_text()
    assert "proto2prod.service.app:ModelService" in manifest
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in manifest
    src = bentos[0].parent / "src"
    assert (src / "service" / "app.py").is_file() and (src / "examples" / "digits.py").is_file()
    assert not (src / "tests").exists()
