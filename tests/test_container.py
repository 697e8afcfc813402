"""The service as a container image, built and served here: `proto2prod build REF
--containerize` with podman (no Docker daemon here) from a debootstrapped Debian base
(tests/container_base.py; Docker Hub is unreachable), then the image run read-only,
non-root, against a real loopback `mlflow server`, answering /readyz, /metadata and
/predict with an API key (it listens beyond loopback, so it needs one).

The build reaches the package index the way this machine does: the host network, the
host's CA bundle, and the folder the host's pip finds the CPU torch wheel in (a uv config
says where; uv is what BentoML's Dockerfile installs with).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from proto2prod import Definition, Settings, Trained, examples
from proto2prod.processes import free_port
from proto2prod.registry import Registry, publish
from tests import container_base
from tests.conftest import BIN
from tests.service_process import cli, environment, until

CA = "/etc/ssl/certs/ca-certificates.crt"
WHEELS = Path("/opt/wheels")
UV_CONFIG = """system-certs = true
find-links = ["/opt/wheels"]
constraint-dependencies = ["torch==2.13.0+cpu"]
"""


def build_options(tmp_path: Path) -> list[str]:
    uv = tmp_path / "uv.toml"
    uv.write_text(UV_CONFIG)
    volumes = [f"{CA}:{CA}:ro", f"{uv}:/etc/uv/uv.toml:ro"]
    if WHEELS.is_dir():
        volumes.append(f"{WHEELS}:{WHEELS}:ro")
    return ["network=host", *(f"volume={v}" for v in volumes)]


def test_the_image_is_built_with_podman_and_serves_the_registered_version(
    tmp_path: Path, mlflow_server: str, digits: Definition, digits_quick: Trained
) -> None:
    base = container_base.make()
    home = tmp_path / "home"
    registry = Registry(
        Settings.from_env({"PROTO2PROD_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server})
    )
    version = publish(registry, digits, digits_quick, alias="production").version
    image = f"localhost/proto2prod-digits:{uuid.uuid4().hex[:8]}"
    options = [arg for opt in build_options(tmp_path) for arg in ("--build-opt", opt)]
    started = time.monotonic()
    built = subprocess.run(
        [
            str(BIN / "proto2prod"),
            "build",
            "digits@production",
            "--definition",
            str(Path(examples.__file__).parent / "digits.py"),
            "--containerize",
            "--backend",
            "podman",
            "--base-image",
            base,
            "--image",
            image,
            *options,
        ],
        env={
            **environment(home, mlflow_server),
            "BENTOML_HOME": str(tmp_path / "bentoml"),
        },
        capture_output=True,
        text=True,
        timeout=1500,
    )
    took = time.monotonic() - started
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert f"built image {image}" in built.stdout, built.stdout
    size = int(
        subprocess.check_output(["podman", "image", "inspect", "--format", "{{.Size}}", image])
    )
    print(f"image {image}: {size / 1e6:,.0f} MB, built in {took:.0f} s")
    (tmp_path / "build.log").write_text(built.stdout + built.stderr)
    try:
        serve_the_image(tmp_path, home, image, mlflow_server, version, digits)
    finally:
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True)


def serve_the_image(
    tmp_path: Path, home: Path, image: str, tracking_uri: str, version: str, digits: Definition
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    created = cli(
        home, "keys", "create", "web", "--json", PROTO2PROD_KEYS_FILE=str(keys / "keys.json")
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    (keys / "keys.json").chmod(
        0o644
    )  # as a Kubernetes Secret is mounted: the image's user reads it
    port, volume = free_port(), f"proto2prod-test-cache-{uuid.uuid4().hex[:8]}"
    name = f"proto2prod-test-{uuid.uuid4().hex[:8]}"
    run = [
        "podman",
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "-v",
        f"{volume}:/var/cache/proto2prod",
        "-v",
        f"{keys}:/etc/proto2prod/keys:ro",
        "-e",
        f"MLFLOW_TRACKING_URI={tracking_uri}",
        "-e",
        "PROTO2PROD_HOME=/var/cache/proto2prod",
        "-e",
        "PROTO2PROD_KEYS_FILE=/etc/proto2prod/keys/keys.json",
        "-e",
        f"PORT={port}",
        image,
    ]
    started = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        until(ready, 240, "the container's /readyz")
        auth = {"Authorization": f"Bearer {key}"}
        item = digits.model.examples()[0]
        refused = httpx.post(f"{url}/predict", json={"inputs": [item]}, timeout=30)
        assert refused.status_code == 401  # beyond loopback: keys, fail closed
        answer = httpx.post(f"{url}/predict", json={"inputs": [item]}, headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == version
        meta = httpx.get(f"{url}/metadata", headers=auth, timeout=10).json()
        assert meta["version"] == version and meta["reference"] == "digits@production"
        user = subprocess.run(["podman", "exec", name, "id", "-u"], capture_output=True, text=True)
        assert user.stdout.strip() == "1034"  # BentoML's non-root user
        cached = subprocess.run(
            ["podman", "exec", name, "ls", "-R", "/var/cache/proto2prod"],
            capture_output=True,
            text=True,
        )
        assert "weights.safetensors" in cached.stdout, cached.stdout  # in the volume
    finally:
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        (tmp_path / "container.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(["podman", "rm", "-f", "-t", "10", name], capture_output=True)
        subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True)
