"""The BentoML service as a real `bentoml serve` process, fed by a real registry."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto2prod import Definition, Settings, Trained, fields
from proto2prod.predictor import Predictor
from proto2prod.registry import Registry, fetch, publish
from proto2prod.registry.publish import WEIGHTS, sha256_file
from tests.compare import assert_same_outputs
from tests.service_process import (
    ADMIN_TOKEN,
    published,
    running_service,
    running_service_process,
    until,
)

pytestmark = pytest.mark.server
POLL_S = 1.0


class Digits:
    """The service under test and what the test knows about its registry."""

    def __init__(
        self, url: str, pid: int, root: Path, registry: Registry, definition: Definition
    ) -> None:
        self.url = url
        self.pid = pid
        self.root = root
        self.registry = registry
        self.definition = definition
        self.http = httpx.Client(base_url=url, timeout=30)

    def predict(self, items: list[object]) -> httpx.Response:
        return self.http.post("/predict", json={"inputs": items})

    def metadata(self) -> dict[str, object]:
        return self.http.get("/metadata").json()

    def wait_for_version(self, version: str, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.metadata()["version"] == version:
                return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"version {version} not served after {timeout}s: {self.metadata()}")


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, digits: Definition, digits_trained: Trained
) -> Iterator[Digits]:
    root = tmp_path_factory.mktemp("service")
    registry, _ = published(root / "home", digits, digits_trained)
    with running_service_process(
        root / "home", "digits@production", root / "service.log", PROTO2PROD_MAX_BODY_MB="1"
    ) as (url, proc):
        yield Digits(url, proc.pid, root, registry, digits)


@pytest.fixture
def serving(service: Digits) -> Iterator[str]:
    """The version the module's service serves now; put back (alias and service) after the
    test, also when it fails, so the next test finds the service as it expects."""
    version = str(service.metadata()["version"])
    yield version
    if service.registry.resolve("digits@production", with_metrics=False).version != version:
        service.registry.promote("digits", version, "production")
    service.wait_for_version(version, POLL_S + 10)


def held_out_pngs() -> tuple[list[str], np.ndarray]:
    from proto2prod.examples.digits import load_split

    _, x_test, _, y_test = load_split()
    return [fields.Image.to_png_base64(x) for x in x_test], y_test


def test_held_out_accuracy_and_parity_with_the_predictor(
    service: Digits, digits_trained: Trained
) -> None:
    items, labels = held_out_pngs()
    outputs: list[dict[str, object]] = []
    for start in range(0, len(items), 60):
        response = service.predict(items[start : start + 60])
        assert response.status_code == 200, response.text
        body = response.json()
        assert response.headers["X-Model-Version"] == body["version"]
        assert body["model"] == "digits"
        outputs += body["outputs"]
    accuracy = np.mean([o["label"] == str(y) for o, y in zip(outputs, labels, strict=True)])
    assert accuracy >= 0.95
    local = Predictor(service.definition.model, digits_trained.weights, "cpu")
    assert_same_outputs(outputs, local.predict_batch(items))


def test_metadata_and_health_routes(service: Digits) -> None:
    meta = service.metadata()
    assert meta["name"] == "digits" and meta["alias"] == "production"
    assert meta["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert meta["registry_reachable"] is True
    assert meta["server"] == {"loop": "uvloop", "http": "httptools"}  # the serve extra's stack
    assert "HTTP: uvicorn on uvloop + httptools" in (service.root / "service.log").read_text()
    assert meta["definition"] == "proto2prod.examples.digits:Digits"
    for key in ("version", "run_id", "loaded_at", "last_registry_check"):
        assert meta[key], key
    assert service.http.get("/livez").status_code == 200
    assert service.http.get("/readyz").status_code == 200
    spec = service.http.get("/docs.json").json()  # what BentoML's Swagger UI at / reads
    schemas = spec["components"]["schemas"]
    assert "base64 PNG/JPEG string or a nested list" in str(schemas)  # the Image field's
    assert "'enum': ['0', '1', '2'" in str(schemas)  # the Label field's classes
    # The document's schemas are the fields' own: /docs cannot drift from what answers.
    model = service.definition.model
    assert schemas["Item"] == model.inputs.json_schema()
    assert schemas["Output"] == model.outputs.json_schema()


def test_predict_is_answered_outside_bentomls_per_request_layers(service: Digits) -> None:
    """service/layers.py: BentoML's request metrics (and tracing, and its timeout task) wrap
    every route but /predict, which our layers answer first; its requests are counted in
    our own metrics instead."""
    item = service.definition.model.examples()[0]
    for _ in range(3):
        assert service.http.post("/predict", json={"inputs": [item]}).status_code == 200
        assert service.http.get("/metadata").status_code == 200
    metrics = service.http.get("/metrics").text
    counted: dict[str, float] = {}  # BentoML lists its API routes at 0 from the start
    for route, n in re.findall(
        r'^\w+_request_total\{[^}]*endpoint="([^"]+)"[^}]*\} (\S+)$', metrics, re.M
    ):
        counted[route] = counted.get(route, 0.0) + float(n)
    assert counted.get("/metadata", 0) >= 3, metrics[:2000]
    assert counted.get("/predict", 0) == 0, metrics[:2000]
    assert re.search(r'^proto2prod_requests_total\{[^}]*status="200"', metrics, re.M)


def test_32_concurrent_clients_are_batched(service: Digits) -> None:
    items, _ = held_out_pngs()

    def call(i: int) -> int:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            codes = [
                client.post(
                    "/predict", json={"inputs": [items[(i * 5 + k) % len(items)]]}
                ).status_code
                for k in range(5)
            ]
        return max(codes)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        assert set(pool.map(call, range(32))) == {200}
    metrics = service.http.get("/metrics").text
    total = sum(
        float(v) for v in re.findall(r"^proto2prod_batch_size_sum\{.*\} (\S+)$", metrics, re.M)
    )
    count = sum(
        float(v) for v in re.findall(r"^proto2prod_batch_size_count\{.*\} (\S+)$", metrics, re.M)
    )
    assert count > 0 and total / count > 1, (total, count)
    assert 'version="' in metrics


def test_bad_inputs_get_4xx_naming_index_and_field(service: Digits) -> None:
    good = service.definition.model.examples()[0]
    r = service.http.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = service.http.post("/predict", json={"items": [good]})
    assert r.status_code == 400 and "inputs" in r.text
    r = service.predict([good, "not an image"])
    assert r.status_code == 422
    assert r.json()["index"] == 1 and r.json()["field"] == "image"
    assert "base64 PNG/JPEG" in r.json()["expected"]
    r = service.predict([good, good, [[[1, 2]]]])
    assert r.status_code == 422 and r.json()["index"] == 2 and "shape" in r.json()["problem"]
    r = service.predict([])
    assert r.status_code == 422 and "empty" in r.json()["message"]
    r = service.predict([base64.b64encode(b"GIF89a").decode()])
    assert r.status_code == 422 and "not a PNG or JPEG" in r.json()["problem"]
    assert "not an image" not in service.predict(["not an image"]).text  # input never echoed


def test_body_limits_and_content_types(service: Digits) -> None:
    big = b'{"inputs": ["' + b"A" * (2 * 1024 * 1024) + b'"]}'
    r = service.http.post("/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "PROTO2PROD_MAX_BODY_MB" in r.json()["message"]

    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ["'
        for _ in range(40):
            yield b"A" * 65536
        yield b'"]}'

    r = service.http.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    r = service.http.post(
        "/predict",
        content=b"\x80\x04N.",
        headers={"content-type": "application/vnd.bentoml+pickle"},
    )
    assert r.status_code == 415
    assert service.predict(service.definition.model.examples()[:1]).status_code == 200


def test_one_bad_request_does_not_fail_the_batch_it_joins(service: Digits) -> None:
    items, labels = held_out_pngs()
    barrier = threading.Barrier(17)

    def send(i: int) -> httpx.Response:
        payload = ["garbage"] if i == 16 else [items[i]]
        with httpx.Client(base_url=service.url, timeout=30) as client:
            barrier.wait()
            return client.post("/predict", json={"inputs": payload})

    with concurrent.futures.ThreadPoolExecutor(17) as pool:
        responses = list(pool.map(send, range(17)))
    assert responses[16].status_code == 422
    assert [r.status_code for r in responses[:16]] == [200] * 16
    hits = [r.json()["outputs"][0]["label"] == str(labels[i]) for i, r in enumerate(responses[:16])]
    assert sum(hits) >= 14


def test_admin_reload_needs_the_token(service: Digits) -> None:
    assert service.http.post("/admin/reload").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert service.http.post("/admin/reload", headers=wrong).status_code == 401
    bare = {"Authorization": ADMIN_TOKEN}  # the right token without its scheme
    assert service.http.post("/admin/reload", headers=bare).status_code == 401
    other = {"Authorization": f"Basic {ADMIN_TOKEN}"}
    assert service.http.post("/admin/reload", headers=other).status_code == 401
    ok = service.http.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200 and ok.json()["version"] == service.metadata()["version"]


class Looper:
    """8 clients predicting in a loop, recording (status, version) of every answer."""

    def __init__(self, service: Digits, clients: int = 8) -> None:
        self.service = service
        self.stop = threading.Event()
        self.seen: list[list[tuple[int, str]]] = [[] for _ in range(clients)]
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]
        self.item = service.definition.model.examples()[0]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.service.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/predict", json={"inputs": [self.item]})
                    self.seen[i].append((r.status_code, r.headers.get("X-Model-Version", "")))
                except httpx.HTTPError as exc:
                    self.seen[i].append((0, type(exc).__name__))

    def __enter__(self) -> Looper:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def answered(self) -> int:
        return sum(len(client) for client in self.seen)

    def wait_for_answers(self, count: int = 40) -> None:
        """Until `count` more answers have come back: the load is flowing (or was)."""
        target = self.answered() + count
        until(lambda: self.answered() >= target, 30, f"{count} more answers under load")

    def check(self, old: str, new: str) -> None:
        answers = [a for client in self.seen for a in client]
        assert answers and all(status == 200 for status, _ in answers), set(answers)
        for client in self.seen:
            versions = [v for _, v in client]
            assert set(versions) <= {old, new}
            if new in versions:  # no flapping back once a client saw the new version
                assert old not in versions[versions.index(new) :]


def test_promote_and_rollback_swap_live_without_failed_requests(
    service: Digits, digits_quick: Trained
) -> None:
    old = str(service.metadata()["version"])
    new = publish(service.registry, service.definition, digits_quick).version
    with Looper(service) as looper:
        looper.wait_for_answers()
        service.registry.promote("digits", new, "production")
        took = service.wait_for_version(new, POLL_S + 5)
        looper.wait_for_answers()
    looper.check(old, new)
    assert took <= POLL_S + 5
    assert service.metadata()["alias_changed_at"]

    with Looper(service) as looper:
        looper.wait_for_answers()
        assert service.registry.rollback("digits", "production") == (new, old)
        service.wait_for_version(old, POLL_S + 5)
        looper.wait_for_answers()
    looper.check(new, old)


def test_corrupted_version_is_refused_and_the_old_one_keeps_serving(
    service: Digits, digits_quick: Trained, serving: str
) -> None:
    bad = publish(service.registry, service.definition, digits_quick).version
    local = fetch(service.registry, f"digits/{bad}")  # the service shares this cache
    local.weights.write_bytes(local.weights.read_bytes()[:-1] + b"\x00")
    service.registry.promote("digits", bad, "production")
    deadline = time.monotonic() + POLL_S + 10
    while time.monotonic() < deadline and not service.metadata()["last_swap_error"]:
        time.sleep(0.2)
    meta = service.metadata()
    assert meta["version"] == serving
    assert f"digits/{bad}" in str(meta["last_swap_error"]) and "sha256" in str(
        meta["last_swap_error"]
    )
    assert service.predict(service.definition.model.examples()[:1]).status_code == 200


def test_registry_down_keeps_serving_and_restart_serves_the_cache(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    from tests.processes import free_port, mlflow_server_args, server, stop

    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    args = mlflow_server_args(port, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    home = tmp_path / "home"
    with server(args, f"{tracking}/health", tmp_path / "mlflow.log") as mlflow_proc:
        registry = Registry(
            Settings.from_env({"PROTO2PROD_HOME": str(home), "MLFLOW_TRACKING_URI": tracking})
        )
        version = publish(registry, digits, digits_quick, alias="production").version
        with running_service(
            home, "digits@production", tmp_path / "a.log", tracking_uri=tracking
        ) as url:
            client = httpx.Client(base_url=url, timeout=30)
            item = digits.model.examples()[:1]
            assert client.post("/predict", json={"inputs": item}).status_code == 200
            stop(mlflow_proc)
            deadline = time.monotonic() + 20
            while client.get("/metadata").json()["registry_reachable"] is not False:
                assert time.monotonic() < deadline, client.get("/metadata").json()
                time.sleep(0.2)
            meta = client.get("/metadata").json()
            assert meta["registry_status"] == "registry unreachable" and meta["last_good_sync"]
            assert client.get("/readyz").status_code == 200
            for _ in range(5):
                assert client.post("/predict", json={"inputs": item}).status_code == 200

    # The registry is still down: a fresh service serves the cached version of the alias.
    with running_service(
        home, "digits@production", tmp_path / "b.log", tracking_uri=tracking
    ) as url:
        client = httpx.Client(base_url=url, timeout=30)
        response = client.post("/predict", json={"inputs": item})
        assert response.status_code == 200 and response.headers["X-Model-Version"] == version
        meta = client.get("/metadata").json()
        assert meta["served_from_cache"] is True and meta["registry_reachable"] is False


def _artifact_file(registry: Registry, version: str) -> Path:
    """The weights file of `version` in the embedded artifact store."""
    from urllib.parse import urlparse

    from proto2prod.registry.cache import _artifact_location

    info = registry.resolve(f"digits/{version}")
    return Path(urlparse(_artifact_location(registry, info)).path) / "artifacts" / WEIGHTS


def _missing_artifact(service: Digits, version: str) -> str:
    _artifact_file(service.registry, version).unlink()
    return "missing from the artifact store"


def _other_fields(service: Digits, version: str) -> str:
    spec = service.definition.model.spec()
    spec["outputs"]["classes"] = spec["outputs"]["classes"][:-1]
    service.registry.client.set_model_version_tag(
        "digits", version, "proto2prod.spec", json.dumps(spec, sort_keys=True)
    )
    return "was published with fields"


def _weights_that_do_not_fit(service: Digits, version: str) -> str:
    from safetensors.torch import save_file

    path = _artifact_file(service.registry, version)
    save_file({"scale": torch.ones(1)}, str(path))  # another network's weights, honestly hashed
    service.registry.client.set_model_version_tag(
        "digits", version, f"proto2prod.sha256.{WEIGHTS}", sha256_file(path)
    )
    return "the weights do not fit"


@pytest.mark.parametrize("damage", [_missing_artifact, _other_fields, _weights_that_do_not_fit])
def test_a_bad_version_promoted_under_load_is_refused_with_zero_failed_requests(
    service: Digits, digits_quick: Trained, damage: Callable[[Digits, str], str], serving: str
) -> None:
    bad = publish(service.registry, service.definition, digits_quick).version
    reason = damage(service, bad)
    with Looper(service) as looper:
        time.sleep(0.5)
        service.registry.promote("digits", bad, "production")
        deadline = time.monotonic() + POLL_S + 10
        while f"digits/{bad}" not in str(service.metadata()["last_swap_error"]):
            assert time.monotonic() < deadline, service.metadata()
            time.sleep(0.2)
        time.sleep(POLL_S + 0.5)  # a poll more: the refused version is not retried into 5xx
    answers = {answer for client in looper.seen for answer in client}
    assert answers == {(200, serving)}, answers
    meta = service.metadata()
    assert meta["version"] == serving and reason in str(meta["last_swap_error"]), meta
    log = (service.root / "service.log").read_text()
    assert f"refused digits/{bad}" in log and reason in log


def _png_claiming(height: int, width: int) -> bytes:
    """A valid PNG header for a `height` x `width` greyscale image (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 16)  # the first rows; a bomb inflates on read
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _service_rss_mb(pid: int) -> float:
    """Resident memory of the service's process tree (arbiter and workers), MB."""
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6


def test_memory_stays_flat_under_oversized_and_malformed_bodies(service: Digits) -> None:
    big = b'{"inputs": ["' + b"A" * (8 * 1024 * 1024) + b'"]}'
    huge_png = base64.b64encode(_png_claiming(100_000, 100_000)).decode()
    bad_bodies: list[tuple[bytes, int]] = [
        (big, 413),
        (json.dumps({"inputs": [huge_png]}).encode(), 422),  # refused from the header
        (b'{"inputs": [[[NaN, 1], [2, 3]]]}', 422),  # the parser takes NaN; the field does not
        (json.dumps({"inputs": [[[float("inf")] * 8] * 8]}).encode(), 422),
        (json.dumps({"inputs": [[[1e308] * 8] * 8]}).encode(), 422),
        (b'{"inputs": [', 400),
        (b"", 400),
    ]
    headers = {"content-type": "application/json"}

    def burst() -> None:
        for body, status in bad_bodies:
            r = service.http.post("/predict", content=body, headers=headers)
            assert r.status_code == status, (body[:40], r.status_code, r.text[:200])
            assert r.status_code < 500 and len(r.content) < 2000  # no echo of the input

    burst()  # first use of each path allocates its caches
    before = _service_rss_mb(service.pid)
    for _ in range(15):
        burst()
    grown = _service_rss_mb(service.pid) - before
    assert grown < 60, f"resident memory grew by {grown:.0f} MB over 105 bad requests"
    assert service.predict(service.definition.model.examples()[:1]).status_code == 200


def test_schemathesis_finds_no_server_error_and_the_service_stays_live(service: Digits) -> None:
    from tests.conftest import BIN

    result = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{service.url}/docs.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "60",
            "--request-timeout",
            "10",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert cases and cases[1] == cases[2] and int(cases[1]) >= 100, result.stdout[-2000:]
    assert service.http.get("/livez").status_code == 200
    assert service.predict(service.definition.model.examples()[:1]).status_code == 200


@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner),
            max_leaves=30,
        ).map(lambda v: json.dumps({"inputs": v}).encode()),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/octet-stream"]),
)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_bodies_never_get_a_server_error(
    service: Digits, body: bytes, content_type: str
) -> None:
    r = service.http.post("/predict", content=body, headers={"content-type": content_type})
    assert r.status_code < 500, (body[:80], r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert "error" in r.json()


def test_two_workers_each_load_the_model_and_answer(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    published(tmp_path / "home", digits, digits_quick)
    items, _ = held_out_pngs()
    with running_service(
        tmp_path / "home", "digits@production", tmp_path / "service.log", PROTO2PROD_WORKERS="2"
    ) as url:
        workers: dict[int, int] = {}  # index -> pid
        # The kernel hands each new connection to one of the workers listening on the
        # shared socket: a few dozen connections reach both.
        for _ in range(200):
            with httpx.Client(base_url=url, timeout=30) as fresh:
                worker = fresh.get("/metadata").json()["worker"]
                answer = fresh.post("/predict", json={"inputs": items[:3]})
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["outputs"]) == 3
            workers[worker["index"]] = worker["pid"]
            assert worker["of"] == 2
            if len(workers) == 2:
                break
        assert sorted(workers) == [1, 2], workers
        assert len(set(workers.values())) == 2  # two processes, each with its own model
