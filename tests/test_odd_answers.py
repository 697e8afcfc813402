"""The service's clients (the remote prototype, `proto2prod drift`) against a real HTTP
server on loopback that answers what no proto2prod service would: each odd answer is one
readable message (exit 2, or 75 to retry), never a traceback, and what is read is bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from proto2prod.client import MAX_ANSWER_BYTES
from proto2prod.errors import NotAService, ServiceUnreachable
from proto2prod.prototype.backends import Remote
from tests.service_process import cli

ANSWERS: dict[str, tuple[int, str, bytes]] = {}
"""path -> (status, content type, body) the odd server gives."""
HUGE = 400 * 1024 * 1024


class Odd(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status, kind, body = ANSWERS.get(self.path, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if body == b"HUGE":  # 400 MB declared, streamed until the client hangs up
            self.send_header("Content-Length", str(HUGE))
            self.end_headers()
            block = b"[" * (1024 * 1024)
            try:
                for _ in range(HUGE // len(block)):
                    self.wfile.write(block)
            except OSError:
                pass
            return
        if body == b"CHUNKED":  # no length: 100 MB in chunks
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"{" * (1024 * 1024)
            try:
                for _ in range(100):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def odd() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("status", "kind", "body", "expected"),
    [
        (200, "text/html", b"<html>hello</html>", "answered 200 with 18 bytes of text/html"),
        (200, "application/json", b"[1, 2]", "answered 200 with 6 bytes"),
        (200, "application/json", b'{"version": "1"}', "a JSON object with version"),
        (200, "application/json", b'{"outputs": [1, 2, 3]}', "not 1 outputs"),
        (422, "application/json", b"[1]", "refused this input (422): 3 bytes"),
        (422, "application/json", b'{"message": "bad", "index": true}', "(422): bad"),
        (503, "text/plain", b"", "could not answer (503): an empty body. Try again."),
        (200, "application/json", b"HUGE", "declares 419430400 bytes), too large to read"),
        (200, "application/json", b"CHUNKED", "bytes so far), too large to read"),
    ],
)
def test_every_odd_prediction_answer_is_one_readable_message(
    odd: str, status: int, kind: str, body: bytes, expected: str
) -> None:
    ANSWERS["/predict"] = (status, kind, body)
    process = psutil.Process()
    before = process.memory_info().rss
    outcomes = Remote(odd, timeout=30).predict(["item"])
    assert len(outcomes) == 1 and outcomes[0].output is None
    assert expected in (outcomes[0].error or ""), outcomes[0].error
    assert "Traceback" not in (outcomes[0].error or "")
    # bounded: never more than the limit held (400 MB declared is refused before reading)
    assert process.memory_info().rss - before < MAX_ANSWER_BYTES * 2.5


@pytest.mark.parametrize(
    ("status", "kind", "body", "error"),
    [
        (200, "text/html", b"<html>a login page</html>", NotAService),
        (200, "application/json", b"{}", NotAService),
        (200, "application/json", b"[]", NotAService),
        (200, "application/json", b'{"name": "digits"}', NotAService),  # no UI description
        (404, "text/plain", b"not found", NotAService),
        (503, "text/plain", b"down", ServiceUnreachable),
        (200, "application/json", b"HUGE", NotAService),
    ],
)
def test_odd_metadata_is_one_error_for_the_prototype(
    odd: str, status: int, kind: str, body: bytes, error: type[Exception]
) -> None:
    ANSWERS["/metadata"] = (status, kind, body)
    with pytest.raises(error) as raised:
        Remote(odd, timeout=30).spec()
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"<html>a login page</html>", 2),
        (b"[]", 2),
        (b'{"name": "digits", "alias": "production", "drift": []}', 2),
        (b'{"name": "digits", "alias": "production", "drift": {"statistics": {"x": 1}}}', 2),
    ],
)
def test_drift_and_prototype_on_an_odd_service_exit_in_one_line(
    odd: str, tmp_path: Path, body: bytes, code: int
) -> None:
    ANSWERS["/metadata"] = (200, "application/json", body)
    for args in (["drift", "digits@production", "--url", odd], ["prototype", "--backend", odd]):
        result = (
            cli(tmp_path, *args, "--port", "1") if args[0] == "prototype" else cli(tmp_path, *args)
        )
        assert result.returncode == code, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_a_service_that_is_down_is_75_retry(tmp_path: Path) -> None:
    from tests.processes import free_port

    result = cli(tmp_path, "drift", "digits@production", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 75 and result.stderr.startswith("error:"), result.stderr
