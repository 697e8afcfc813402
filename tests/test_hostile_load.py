"""Hostile load on a real `proto2prod serve`: bounded memory, a free event loop, slow senders
that lose their place, and answers that say what is wrong. Each test failed on the service
as it was before `/predict` was served by `service/predict.py`."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from proto2prod import Definition, Trained
from tests.service_process import published, running_service_process

pytestmark = pytest.mark.server

LIMITS = {
    "PROTO2PROD_MAX_BODY_MB": "4",
    "PROTO2PROD_MAX_INFLIGHT_MB": "8",
    "PROTO2PROD_MAX_CONCURRENCY": "4",
    "PROTO2PROD_BODY_TIMEOUT_S": "2",
    "PROTO2PROD_TIMEOUT_S": "3",
    "PROTO2PROD_MAX_ITEMS": "64",
    "PROTO2PROD_MAX_BATCH_SIZE": "8",
}
JSON = {"content-type": "application/json"}


class Service:
    def __init__(self, url: str, pid: int, log: Path, example: object) -> None:
        self.url, self.pid, self.log, self.example = url, pid, log, example
        self.http = httpx.Client(base_url=url, timeout=30)

    def rss_mb(self) -> float:
        root = psutil.Process(self.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6

    def healthy(self) -> bool:
        return self.http.post("/predict", json={"inputs": [self.example]}).status_code == 200


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, digits: Definition, digits_quick: Trained
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("hostile")
    published(root / "home", digits, digits_quick)
    log = root / "service.log"
    with running_service_process(root / "home", "digits@production", log, **LIMITS) as (url, p):
        service = Service(url, p.pid, log, digits.model.examples()[0])
        yield service
        service.http.close()


def test_concurrent_large_bodies_stay_within_the_memory_budget(service: Service) -> None:
    # 3.5 MB of numbers each, 24 at once: parsed JSON takes ~7x its text, arrays more.
    body = json.dumps({"inputs": [[[300.5] * 700] * 800]}).encode()  # pixels over 255
    assert 3.5e6 < len(body) < 4 * 1024 * 1024
    assert service.healthy()
    before = service.rss_mb()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, service.rss_mb())
            time.sleep(0.02)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            return client.post("/predict", content=body, headers=JSON)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(send, range(24)))
    finally:
        done.set()
        sampler.join()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {422, 503}, statuses  # the shape is wrong, or over the budget
    assert 503 in statuses and all(
        r.headers.get("retry-after") for r in responses if r.status_code == 503
    )
    assert "PROTO2PROD_MAX_INFLIGHT_MB" in next(r for r in responses if r.status_code == 503).text
    # Measured (settings.py): ~100 MB + ~14x PROTO2PROD_MAX_INFLIGHT_MB (8 MB here: ~212 MB);
    # the same 24 bodies without a budget: ~700 MB.
    assert peak - before < 350, f"the worker grew {peak - before:.0f} MB at the peak"
    assert service.healthy()


def _empty_png(side: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, "PNG")  # ~16 kB that decode to 16 M pixels
    return base64.b64encode(buffer.getvalue()).decode()


def test_an_expensive_request_leaves_health_and_metadata_answering(service: Service) -> None:
    expensive = {"inputs": [_empty_png(4096)] * 40}  # ~0.9 MB; decoding takes many seconds
    result: dict[str, httpx.Response] = {}

    def send() -> None:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            result["r"] = client.post("/predict", json=expensive)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.3)
    latencies: list[float] = []
    with httpx.Client(base_url=service.url, timeout=1.0) as probe:
        while sender.is_alive() and len(latencies) < 60:
            for path in ("/readyz", "/livez", "/metadata"):
                started = time.perf_counter()
                assert probe.get(path).status_code == 200  # a 1 s timeout raises
                latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    sender.join()
    assert len(latencies) >= 9, "the request ended before it could be probed"
    # Answered under its timeout (3 s here), not after every image is decoded.
    assert result["r"].status_code == 504 and "PROTO2PROD_TIMEOUT_S" in result["r"].text
    assert statistics.median(latencies) < 0.05, sorted(latencies)
    assert service.healthy()


def test_slow_senders_lose_their_place_and_others_are_served(service: Service) -> None:
    host, port = service.url.removeprefix("http://").split(":")
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1000000\r\n\r\n"
    ).encode()
    slow = []
    for _ in range(12):  # three times PROTO2PROD_MAX_CONCURRENCY
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(head + b'{"inputs":')
        slow.append(s)
    try:
        time.sleep(0.3)
        started = time.monotonic()
        r = service.http.post("/predict", json={"inputs": [service.example]})
        assert r.status_code == 200, r.text  # admission counts whole bodies only
        assert time.monotonic() - started < 1.5
        answers = [_read_until_closed(s) for s in slow]  # after the 2 s
    finally:
        for s in slow:
            s.close()
    assert all(a.startswith("HTTP/1.1 408") for a in answers), answers[0][:200]
    assert "PROTO2PROD_BODY_TIMEOUT_S" in answers[0]


def _read_until_closed(sock: socket.socket) -> str:
    """The whole response: a 408 is sent with `connection: close`, possibly in two packets."""
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_too_many_items_is_refused_as_such_and_large_requests_are_split(
    service: Service,
) -> None:
    r = service.http.post("/predict", json={"inputs": [service.example] * 65})
    assert r.status_code == 413 and "PROTO2PROD_MAX_ITEMS" in r.json()["message"]
    assert "retry-after" not in r.headers  # it could never succeed: no point retrying

    r = service.http.post("/predict", json={"inputs": [service.example] * 60})
    assert r.status_code == 200 and len(r.json()["outputs"]) == 60
    metrics = service.http.get("/metrics").text
    sizes = {
        float(le): float(n)
        for le, n in re.findall(
            r'proto2prod_batch_size_bucket\{le="([0-9.]+)".*?\} ([0-9.]+)', metrics
        )
    }
    assert sizes[8.0] == max(sizes.values()) > 0, sizes  # no forward pass over the cap of 8


def test_json_content_type_is_required(service: Service) -> None:
    body = json.dumps({"inputs": [service.example]}).encode()
    r = service.http.post("/predict", content=body, headers={"content-type": ""})
    assert r.status_code == 415
    r = httpx.post(f"{service.url}/predict", content=body)  # no Content-Type at all
    assert r.status_code == 415
    r = service.http.post(
        "/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 200


def test_client_errors_and_disconnects_log_no_input_or_traceback(service: Service) -> None:
    secret = "c2VjcmV0LWlucHV0LXZhbHVl"  # base64, valid, not an image
    service.http.post("/predict", json={"inputs": [service.example, secret]})  # 422
    service.http.post("/predict", content=b"{not json", headers=JSON)  # 400
    service.http.post("/predict", json={"items": []})  # 400
    host, port = service.url.removeprefix("http://").split(":")
    body = json.dumps({"inputs": [service.example] * 8}).encode()
    head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for sent in (body[:20], body):  # gone mid-body; gone before its answer
        with socket.create_connection((host, int(port))) as s:
            s.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + sent)
    time.sleep(0.5)
    assert service.healthy()
    log = service.log.read_text()
    assert secret not in log and "{not json" not in log
    assert "Traceback" not in log, log[-3000:]
    assert re.search(r"/predict 422 InvalidInput: inputs\[1\] \(field 'image'\)", log), log[-2000:]
    assert "/predict 400 InvalidJSON" in log and "/predict 400 InvalidRequest" in log


def test_two_services_on_one_host_count_only_their_own_requests(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    home = tmp_path / "home"
    published(home, digits, digits_quick)  # one registry; BENTOML_HOME is shared as well

    def served(metrics: str) -> float:
        found = re.search(r'proto2prod_requests_total\{[^}]*status="200"[^}]*\} ([0-9.]+)', metrics)
        return float(found[1]) if found else 0.0

    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    example = {"inputs": digits.model.examples()[:1]}
    with running_service_process(home, "digits@production", log_a) as (a, _):
        for _ in range(3):
            assert httpx.post(f"{a}/predict", json=example).status_code == 200
        with running_service_process(home, "digits@production", log_b) as (b, _):
            for _ in range(7):
                assert httpx.post(f"{b}/predict", json=example).status_code == 200
            assert served(httpx.get(f"{a}/metrics").text) == 3
            assert served(httpx.get(f"{b}/metrics").text) == 7
    assert not (home / "metrics").exists()  # scratch files stay off the data disk
