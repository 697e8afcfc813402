"""The README's `make demo` journey and the Bento build, run for real."""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
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
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "registered digits version 1 with alias @production" in done.stdout
    assert "digits (1 versions)" in done.stdout  # the versions table: its title ...
    assert re.search(r"│ 1\s+│ @production\s+│ accuracy=0\.\d+", done.stdout), done.stdout  # a row
    assert "curl -s -X POST http://127.0.0.1:" in done.stdout
    assert '"label":"7"' in done.stdout and '"version":"1"' in done.stdout
    assert f"UI:       http://127.0.0.1:{ui_port}" in done.stdout
    # Nothing it started is left: no service process, and the port is free again.
    for p in (port, ui_port):
        leftovers = subprocess.run(["pgrep", "-f", "--", f"--port {p}( |$)"], capture_output=True)
        assert leftovers.stdout == b""
        assert p == _bind(p)


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
    assert sorted(p.name for p in (bento / "src").iterdir()) == [
        "bentofile.yaml",
        "digits.py",
        "wheels",
    ]
