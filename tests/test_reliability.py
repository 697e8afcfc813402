"""Fault tests on real processes: a registry that hangs, refuses and comes back; overload;
timeouts; graceful shutdown; start-up faults (docs/reliability.md lists each promise).

The model is `tests/sleepy_model.py`, whose forward pass sleeps as long as it is told.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proto2prod import Definition, NullProgress, Settings, Trained, load_definition
from proto2prod.registry import Registry, publish
from tests.conftest import BIN
from tests.postgres import postgres_bin, running_postgres
from tests.service_process import (
    environment,
    published,
    running_service,
    running_service_process,
)
from tests.tcp_proxy import Proxy

pytestmark = pytest.mark.server
SLEEPY = Path(__file__).with_name("sleepy_model.py")


@pytest.fixture(scope="module")
def sleepy() -> Definition:
    return load_definition(SLEEPY)


@pytest.fixture(scope="module")
def sleepy_trained(sleepy: Definition) -> Trained:
    return sleepy.model.train(NullProgress())


def predict(client: httpx.Client, seconds: float) -> httpx.Response:
    return client.post("/predict", json={"inputs": [seconds]})


def wait_until(what: str, condition: object, timeout: float) -> float:
    """Seconds until `condition()` is true; fail naming `what` after `timeout`."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


def latency(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return time.perf_counter() - started


# -- 1, 2: the registry hangs, refuses, comes back ---------------------------------------
def test_registry_hang_and_refusal_do_not_touch_serving_and_it_recovers(
    tmp_path: Path, mlflow_server: str, sleepy: Definition, sleepy_trained: Trained
) -> None:
    home = tmp_path / "home"
    registry = Registry(
        Settings.from_env({"PROTO2PROD_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server})
    )
    first = publish(registry, sleepy, sleepy_trained, alias="production").version
    proxy = Proxy(int(mlflow_server.rsplit(":", 1)[1]))
    timeout_s, poll_max_s = 2, 2
    try:
        with running_service(
            home,
            "sleepy@production",
            tmp_path / "service.log",
            tracking_uri=proxy.url,
            PROTO2PROD_REGISTRY_TIMEOUT_S=str(timeout_s),
            PROTO2PROD_POLL_MAX_S=str(poll_max_s),
        ) as url:
            client = httpx.Client(base_url=url, timeout=10)

            def meta() -> dict[str, object]:
                return client.get("/metadata").json()

            assert meta()["registry_reachable"] is True and meta()["version"] == first
            proxy.set("hang")
            hung_at = time.monotonic()
            wait_until("hang noticed", lambda: meta()["registry_reachable"] is False, 15)
            # one poll interval, one request timeout (no retries in tests), and slack
            assert time.monotonic() - hung_at <= poll_max_s + timeout_s + 3
            assert "cannot reach the MLflow tracking server" in str(meta()["registry_error"])
            health = [latency(client, p) for _ in range(10) for p in ("/livez", "/readyz")]
            assert statistics.median(health) < 0.1, health
            assert sorted(health)[-2] < 0.1, health  # one scheduling hiccup allowed
            assert all(predict(client, 0).status_code == 200 for _ in range(20))
            checked = meta()["last_registry_check"]
            wait_until("polling goes on", lambda: meta()["last_registry_check"] != checked, 10)
            assert meta()["poll_interval_s"] <= poll_max_s and meta()["registry_failures"] >= 1

            proxy.set("refuse")
            assert all(predict(client, 0).status_code == 200 for _ in range(20))
            assert client.get("/readyz").status_code == 200

            second = publish(registry, sleepy, sleepy_trained).version
            registry.promote("sleepy", second, "production")  # while the service can't see
            proxy.set("pass")
            took = wait_until("recovery", lambda: meta()["version"] == second, 15)
            assert took <= poll_max_s + timeout_s + 5
            recovered = meta()
            assert recovered["registry_reachable"] is True and recovered["registry_failures"] == 0
            assert recovered["registry_status"] == "reachable" and recovered["alias_changed_at"]
            assert predict(client, 0).headers["X-Model-Version"] == second
    finally:
        proxy.close()


# -- 5, 6: overload and timeout ----------------------------------------------------------
@pytest.fixture(scope="module")
def slow_service(
    tmp_path_factory: pytest.TempPathFactory, sleepy: Definition, sleepy_trained: Trained
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slow")
    published(root / "home", sleepy, sleepy_trained)
    with running_service(
        root / "home",
        "sleepy@production",
        root / "service.log",
        PROTO2PROD_MAX_CONCURRENCY="12",
        PROTO2PROD_MAX_QUEUE="4",
        PROTO2PROD_MAX_BATCH_SIZE="2",
        PROTO2PROD_TIMEOUT_S="2",
    ) as url:
        yield url


def test_overload_is_429_or_503_with_retry_after_and_health_still_answers(
    slow_service: str,
) -> None:
    flood = 40
    barrier = threading.Barrier(flood + 1)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=slow_service, timeout=30) as client:
            barrier.wait()
            return predict(client, 0.5)

    with concurrent.futures.ThreadPoolExecutor(flood) as pool:
        futures = [pool.submit(send, i) for i in range(flood)]
        barrier.wait()
        time.sleep(0.2)  # the flood is inside now
        with httpx.Client(base_url=slow_service, timeout=5) as client:
            for path in ("/livez", "/readyz", "/metrics", "/metadata"):
                assert latency(client, path) < 0.5, path
        responses = [f.result() for f in futures]
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429, 503}, codes
    # Which refusal a request meets depends on timing: 429 when 12 are inside at once, 503
    # when the 4-item queue is full (here the usual one). Both carry Retry-After; the 429
    # path alone is pinned down in test_seams.py.
    assert codes.count(200) >= 4 and {429, 503} & set(codes), codes
    for r in responses:
        if r.status_code != 200:
            assert int(r.headers["Retry-After"]) >= 1, r.headers
            assert r.json()["error"] in ("TooManyRequests", "Overloaded"), r.text
        else:
            assert r.json()["outputs"] == [1.0]
    with httpx.Client(base_url=slow_service, timeout=10) as client:
        assert predict(client, 0).status_code == 200  # nothing left stuck


def test_a_request_past_the_timeout_gets_504_and_the_next_one_succeeds(
    slow_service: str,
) -> None:
    with httpx.Client(base_url=slow_service, timeout=30) as client:
        started = time.monotonic()
        slow = predict(client, 3)
        took = time.monotonic() - started
        assert slow.status_code == 504 and slow.json()["error"] == "Timeout", slow.text
        assert 2 <= took < 2 + 1.5, took
        after = predict(client, 0)
        assert after.status_code == 200 and after.json()["outputs"] == [0.0]


# -- 9: graceful shutdown ----------------------------------------------------------------
def test_sigterm_turns_unready_first_finishes_in_flight_requests_and_exits_zero(
    tmp_path: Path, sleepy: Definition, sleepy_trained: Trained
) -> None:
    home = tmp_path / "home"
    published(home, sleepy, sleepy_trained)
    in_flight, drain_s = 50, 1.5
    with running_service_process(
        home, "sleepy@production", tmp_path / "service.log", PROTO2PROD_DRAIN_S=str(drain_s)
    ) as (url, proc):
        ready_seen: list[tuple[float, int | str]] = []

        def send(_: int) -> int:
            with httpx.Client(base_url=url, timeout=30) as client:
                return predict(client, 1.0).status_code

        def probe(until: float) -> None:
            while time.monotonic() < until:
                try:  # a fresh connection each time, as a load balancer's probe
                    status: int | str = httpx.get(f"{url}/readyz", timeout=0.5).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                ready_seen.append((time.monotonic(), status))
                time.sleep(0.05)

        with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
            futures = [pool.submit(send, i) for i in range(in_flight)]
            time.sleep(0.5)  # all 50 are in the server: one batch sleeps, one waits
            terminated = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)  # the main process only, as Kubernetes does
            prober = threading.Thread(target=probe, args=(terminated + drain_s + 1,))
            prober.start()
            codes = [f.result() for f in futures]
            prober.join()
        assert codes == [200] * in_flight, codes
        assert proc.wait(timeout=30) == 0
        exited = time.monotonic() - terminated
    answers = [status for _, status in ready_seen]
    assert answers and answers[0] == 503, answers  # unready at once, while still listening
    assert 200 not in answers, answers
    assert sum(1 for s in answers if s == 503) >= 5, answers  # for the whole drain
    assert exited < drain_s + 10, exited


# -- 11: start-up faults -----------------------------------------------------------------
def test_gpu_required_but_absent_fails_fast_in_one_line(tmp_path: Path) -> None:
    """On any machine: a GPU machine's devices are hidden from the command."""
    result = subprocess.run(
        [str(BIN / "proto2prod"), "serve", "sleepy@production", "--port", "1"],
        env=environment(tmp_path, PROTO2PROD_REQUIRE_GPU="1", CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "PROTO2PROD_REQUIRE_GPU=1 but torch sees no CUDA device" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_registry_down_and_nothing_cached_is_live_but_not_ready_over_http(
    tmp_path: Path,
) -> None:
    from proto2prod.processes import spawn, wait_http
    from tests.processes import free_port, stop

    port = free_port()
    env = {
        **environment(tmp_path / "home", f"http://127.0.0.1:{free_port()}"),  # nobody there
        "PROTO2PROD_DEFINITION": str(SLEEPY),
        "PROTO2PROD_REGISTRY_TIMEOUT_S": "2",
        "PROTO2PROD_REGISTRY_RETRIES": "0",
    }
    log = tmp_path / "service.log"
    proc = spawn(
        [str(BIN / "proto2prod"), "serve", "sleepy@production", "--port", str(port)], log, env
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/livez", proc, log, timeout=150)
        reason = lambda: httpx.get(f"{url}/metadata").json()["not_ready_reason"]  # noqa: E731
        wait_until("a reason", lambda: reason() != "loading", 30)
        assert httpx.get(f"{url}/readyz").status_code == 503
        meta = httpx.get(f"{url}/metadata").json()
        assert "registry unreachable" in meta["not_ready_reason"] and not meta["ready"]
        refused = httpx.post(f"{url}/predict", json={"inputs": [0]})
        assert refused.status_code == 503 and refused.headers["Retry-After"]
    finally:
        stop(proc)


# -- 13: the registry in production form -------------------------------------------------
@pytest.mark.skipif(postgres_bin() is None, reason="needs PostgreSQL (.ci/run installs it)")
def test_postgres_backed_mlflow_server_publish_promote_serve(
    tmp_path: Path, sleepy: Definition, sleepy_trained: Trained
) -> None:
    from tests.processes import free_port, mlflow_server_args, server

    with running_postgres() as database:
        port = free_port()
        tracking = f"http://127.0.0.1:{port}"
        args = mlflow_server_args(port, database, tmp_path / "artifacts")
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        with server(args, f"{tracking}/health", tmp_path / "mlflow.log", env=env, timeout=180):
            home = tmp_path / "home"
            registry = Registry(
                Settings.from_env({"PROTO2PROD_HOME": str(home), "MLFLOW_TRACKING_URI": tracking})
            )
            first = publish(registry, sleepy, sleepy_trained, alias="production").version
            second = publish(registry, sleepy, sleepy_trained).version
            with running_service(
                home, "sleepy@production", tmp_path / "service.log", tracking_uri=tracking
            ) as url:
                client = httpx.Client(base_url=url, timeout=10)
                answer = predict(client, 0.25)
                assert answer.json() == {"outputs": [0.5], "model": "sleepy", "version": first}
                assert registry.promote("sleepy", second, "production") == first
                wait_until("the swap", lambda: predict(client, 0).json()["version"] == second, 10)
                assert registry.rollback("sleepy", "production") == (second, first)
                wait_until(
                    "the rollback", lambda: predict(client, 0).json()["version"] == first, 10
                )
            moves = [(e["action"], e["to"]) for e in registry.alias_log("sleepy", "production")]
            assert moves == [("promote", first), ("promote", second), ("rollback", first)]
        import psycopg

        with psycopg.connect(database) as connection:  # the registry really lives there
            rows = connection.execute(
                "SELECT alias, version FROM registered_model_aliases WHERE name = 'sleepy'"
            ).fetchall()
        assert rows == [("production", int(first))], rows
