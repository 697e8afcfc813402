"""Fast seam tests beside the process tests: the ASGI layers of `/predict` under Starlette's
TestClient, the remote backend against `httpx.MockTransport`, the per-item path in-process.

Each has a real-process counterpart (test_service, test_hostile_load, test_prototype); these
pin the same rules down in milliseconds and name the layer that broke.
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from proto2prod import Definition, InvalidInput, Trained
from proto2prod.errors import ModelNotFound, NotReady, Overloaded, RegistryUnavailable
from proto2prod.predictor import Predictor
from proto2prod.prototype.backends import Remote
from proto2prod.service.guard import Unexpected
from proto2prod.service.http import Answer, BodyLimit
from proto2prod.service.predict import BodyReader, Limits, PredictEndpoint, RequestInfo


def app(answer: Any, *, max_bytes: int = 1000, max_concurrency: int = 4) -> TestClient:
    """BodyLimit outside PredictEndpoint, as the service stacks them; `answer` fakes the
    model-specific part (the service's `answer`)."""
    inner = PredictEndpoint(
        Starlette(),
        answerer=lambda: answer,
        reader=BodyReader(
            Limits(
                max_concurrency=max_concurrency,
                max_inflight_bytes=10_000,
                body_timeout_s=5,
                timeout_s=5,
            )
        ),
    )
    return TestClient(BodyLimit(inner, max_bytes=max_bytes, json_paths=("/predict",)))


async def echo(inputs: list[Any], deadline: float, info: RequestInfo) -> Answer:
    return Answer(200, {"outputs": inputs, "small": info.small, "key": info.key})


def test_predict_layers_answer_each_refusal_with_its_status() -> None:
    client = app(echo)
    ok = client.post("/predict", json={"inputs": [1, 2]})
    assert ok.status_code == 200
    assert ok.json() == {"outputs": [1, 2], "small": True, "key": None}
    keyed = client.post("/predict", json={"inputs": [1]}, headers={"X-Request-Key": "user-7"})
    assert keyed.json()["key"] == "user-7"  # what keeps a client on one side of a canary
    cases = [
        (
            {"content": b"x" * 2000, "headers": {"content-type": "application/json"}},
            413,
            "PayloadTooLarge",
        ),
        (
            {"content": b"{}", "headers": {"content-type": "text/plain"}},
            415,
            "UnsupportedMediaType",
        ),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "InvalidJSON",
        ),
        ({"json": {"items": [1]}}, 400, "InvalidRequest"),
    ]
    for kwargs, status, error in cases:
        response = client.post("/predict", **kwargs)
        assert (response.status_code, response.json()["error"]) == (status, error), kwargs
        assert response.json()["message"]  # always a sentence saying what to do


def test_refusals_that_should_be_retried_say_when() -> None:
    async def overloaded(inputs: list[Any], deadline: float, info: RequestInfo) -> Answer:
        return Answer.of(Overloaded("too much waiting; retry shortly"))

    response = app(overloaded).post("/predict", json={"inputs": [1]})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    not_ready = app(None).post("/predict", json={"inputs": [1]})  # no service yet
    assert not_ready.status_code == 503 and not_ready.json()["error"] == "NotReady"
    assert not_ready.headers["retry-after"] == "5"


def test_every_error_becomes_its_status_body_and_retry_header() -> None:
    for error, status, retry in (
        (InvalidInput("image", "it is empty", "an image", index=2), 422, None),
        (ModelNotFound("no model named 'x'"), 404, None),
        (RegistryUnavailable("down"), 503, "5"),
        (NotReady("loading"), 503, "5"),
    ):
        answer = Answer.of(error)
        assert answer.status == status and answer.headers.get("Retry-After") == retry
        assert answer.body["error"] == type(error).__name__
        assert answer.body["message"] == str(error)
    assert Answer.of(InvalidInput("image", "x", "y", index=2)).body["index"] == 2


def test_remote_backend_fails_only_the_row_a_422_names() -> None:
    posted: list[list[Any]] = []

    def service(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["inputs"]
        posted.append(items)
        if "bad" in items:
            index = items.index("bad")
            body = InvalidInput("image", "not an image", "a PNG", index=index).to_json()
            return httpx.Response(422, json=body)
        return httpx.Response(200, json={"outputs": [f"out-{x}" for x in items], "version": "3"})

    backend = Remote("http://service", transport=httpx.MockTransport(service))
    outcomes = backend.predict(["a", "bad", "b", "bad"])
    assert [o.output for o in outcomes] == ["out-a", None, "out-b", None]
    assert outcomes[1].error and "not an image" in outcomes[1].error
    assert outcomes[0].version == "3"
    assert posted == [["a", "bad", "b", "bad"], ["a", "b", "bad"], ["a", "b"]]  # one per bad


def test_remote_backend_says_why_when_the_service_is_down() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    outcomes = Remote("http://service", transport=httpx.MockTransport(down)).predict(["a", "b"])
    assert all(o.error and "not reachable" in o.error for o in outcomes)


def test_one_bad_item_fails_only_its_own_position(
    digits: Definition, digits_quick: Trained
) -> None:
    predictor = Predictor(digits.model, digits_quick.weights, "cpu")
    good = digits.model.examples()[:2]
    results = predictor.predict_each([good[0], "not an image", good[1]])
    assert isinstance(results[1], InvalidInput) and results[1].index == 1
    assert results[0]["label"] and results[2]["label"]
    assert predictor.predict_batch(good) == [results[0], results[2]]
    with pytest.raises(InvalidInput, match=r"inputs\[1\]"):
        predictor.predict_batch([good[0], "not an image"])


def test_an_uploaded_png_goes_on_as_its_own_bytes_and_other_formats_as_png(
    tmp_path: Any,
) -> None:
    import base64

    import numpy as np
    from PIL import Image as PILImage

    from proto2prod.prototype.convert import file_item

    pixels = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).astype(np.uint8)
    png, gif = tmp_path / "digit.png", tmp_path / "digit.gif"
    PILImage.fromarray(pixels).save(png)
    PILImage.fromarray(pixels).save(gif)
    assert base64.b64decode(file_item(png)) == png.read_bytes()  # untouched
    converted = base64.b64decode(file_item(gif))
    assert converted.startswith(b"\x89PNG")
    with PILImage.open(io.BytesIO(converted)) as img:
        assert np.array_equal(np.asarray(img.convert("L")), pixels)


def test_past_the_concurrency_limit_the_next_request_gets_429() -> None:
    import asyncio

    async def main() -> list[httpx.Response]:
        release = asyncio.Event()

        async def slow(inputs: list[Any], deadline: float, info: RequestInfo) -> Answer:
            await release.wait()
            return Answer(200, {"outputs": inputs})

        endpoint = PredictEndpoint(
            Starlette(),
            answerer=lambda: slow,
            reader=BodyReader(
                Limits(max_concurrency=1, max_inflight_bytes=10_000, body_timeout_s=5, timeout_s=5)
            ),
        )
        transport = httpx.ASGITransport(app=endpoint)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.post("/predict", json={"inputs": [1]}))
            await asyncio.sleep(0.05)  # the first is inside, waiting
            second = await client.post("/predict", json={"inputs": [2]})
            release.set()
            return [await first, second]

    first, second = asyncio.run(main())
    assert first.status_code == 200
    assert second.status_code == 429 and second.headers["retry-after"] == "1"
    assert "PROTO2PROD_MAX_CONCURRENCY" in second.json()["message"]


def test_an_unexpected_error_in_any_layer_is_one_json_500_at_once_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug of ours, with a secret detail")

    client = TestClient(Unexpected(broken), raise_server_exceptions=False)
    with caplog.at_level("ERROR", logger="proto2prod.service"):
        response = client.post("/predict", json={"inputs": [1]})
    assert response.status_code == 500 and response.json()["error"] == "InternalError"
    assert "secret detail" not in response.text  # never in the body
    (record,) = [r for r in caplog.records if r.name == "proto2prod.service"]
    assert record.exc_info and "secret detail" in str(record.exc_info[1])  # in the log
