"""The cache and the poller under an unlucky operator: processes racing for one version, and
a full disk that the service outlives. Real processes, a real mlflow server, a real tmpfs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proto2prod import Definition, Settings, Trained
from proto2prod.registry import Registry, fetch, publish
from tests.conftest import BIN, ROOT
from tests.processes import free_port, server
from tests.service_process import environment

FETCH = """
import sys, time
from proto2prod import Settings
from proto2prod.registry import Registry, fetch
registry = Registry(Settings.from_env({"PROTO2PROD_HOME": sys.argv[1]}))
info = registry.resolve("digits/1", with_metrics=False)  # everything but the download, first
registry.client.get_logged_model(info.source.removeprefix("models:/"))
start = float(sys.argv[2])
while time.time() < start:
    pass
local = fetch(registry, info)
print("fetched", local.path)
"""


def test_processes_racing_to_fetch_one_version_all_get_it(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    home = tmp_path / "home"
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))
    publish(registry, digits, digits_quick)
    for _ in range(4):  # rounds; each starts three fetchers of the uncached version at once
        subprocess.run(["rm", "-rf", str(home / "cache")], check=True)
        start = time.time() + 10  # after imports and lookups, so the downloads overlap
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", FETCH, str(home), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for _ in range(3)
        ]
        outcomes = [racer.communicate(timeout=120) for racer in racers]
        for racer, (out, err) in zip(racers, outcomes, strict=True):
            assert racer.returncode == 0 and "fetched" in out, err[-2000:]
        assert len({out for out, _ in outcomes}) == 1  # one cache entry, the same for all
    assert fetch(registry, "digits/1").weights.is_file()  # whole and verified


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


@pytest.mark.server
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
def test_a_full_disk_is_said_and_the_service_recovers_once_space_is_back(
    tmp_path: Path, mlflow_server: str, digits: Definition, digits_quick: Trained
) -> None:
    publisher = Registry(
        Settings.from_env(
            {"PROTO2PROD_HOME": str(tmp_path / "pub"), "MLFLOW_TRACKING_URI": mlflow_server}
        )
    )
    version = publish(publisher, digits, digits_quick, alias="fulldisk").version
    with small_disk(tmp_path / "disk") as disk:
        filler = fill(disk)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = environment(
            disk / "home",
            mlflow_server,
            PROTO2PROD_POLL_S="1",
            PROTO2PROD_POLL_MAX_S="2",
            PROTO2PROD_DRAIN_S="0",
        )
        log = tmp_path / "service.log"
        args = [str(BIN / "proto2prod"), "serve", "digits@fulldisk", "--port", str(port)]
        with server(args, f"{url}/livez", log, env=env, timeout=150):
            deadline = time.monotonic() + 30
            meta = httpx.get(f"{url}/metadata", timeout=5).json()
            while "disk full" not in str(meta.get("not_ready_reason")):
                assert time.monotonic() < deadline, meta
                time.sleep(0.3)
                meta = httpx.get(f"{url}/metadata", timeout=5).json()
            assert httpx.get(f"{url}/readyz").status_code == 503
            assert meta["registry_failures"] >= 1

            filler.unlink()  # space is back: the next check loads the version
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/readyz").status_code != 200:
                assert time.monotonic() < deadline, httpx.get(f"{url}/metadata").json()
                time.sleep(0.3)
            answer = httpx.post(f"{url}/predict", json={"inputs": digits.model.examples()[:1]})
            assert answer.status_code == 200 and answer.json()["version"] == version
    text = log.read_text()
    assert "disk full" in text and "Traceback" not in text, text[-3000:]
