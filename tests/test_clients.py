"""The service from any client, on real processes: its exact OpenAPI document, the Python
client (sync and async), the model as an MCP tool (the official SDK's client), the CLI's
`--version`, completion and `--json`, and the Node front end (examples/web-node) with its
client typed from the document, driven in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from proto2prod import Definition, Trained
from proto2prod.client import AsyncClient, Client
from proto2prod.errors import InvalidInput, Overloaded, ServiceUnreachable, Unauthorized
from tests.processes import free_port, server
from tests.service_process import (
    cli,
    published,
    running_prototype,
    running_service,
    sleepy_versions,
)

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]
WEB_NODE = ROOT / "examples" / "web-node"


@dataclass
class Served:
    url: str
    key: str
    home: Path
    log: Path
    definition: Definition


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, digits: Definition, digits_quick: Trained
) -> Iterator[Served]:
    """digits@production with API keys on, bodies up to 1 MB."""
    home = tmp_path_factory.mktemp("clients")
    published(home, digits, digits_quick)
    created = cli(home, "keys", "create", "web", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    log = home / "service.log"
    with running_service(home, "digits@production", log, PROTO2PROD_MAX_BODY_MB="1") as url:
        yield Served(url, key, home, log, digits)


def _item(served: Served, n: int = 2) -> Any:
    return served.definition.model.examples()[n]


# -- 1: the OpenAPI document -------------------------------------------------------------


def test_the_openapi_document_validates_and_is_what_the_cli_prints(served: Served) -> None:
    document = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    validate(document)  # openapi-spec-validator: OpenAPI 3.1, JSON Schema 2020-12
    assert httpx.get(f"{served.url}/docs.json", timeout=10).json() == document  # Swagger UI's
    for ref in ("digits@production", "examples/digits.py"):
        printed = cli(served.home, "openapi", ref)
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout) == document, ref
    unknown = cli(served.home, "openapi", "nosuch@production")
    assert unknown.returncode == 3 and "no model named 'nosuch'" in unknown.stderr
    image = document["components"]["schemas"]["Item"]["oneOf"][0]
    assert image["contentEncoding"] == "base64"  # what 3.0 could not say
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/predict", "/metadata", "/admin/reload", "/livez", "/readyz", "/metrics"):
        assert path in document["paths"], path


def test_every_answer_of_predict_is_documented_with_its_body(served: Served) -> None:
    """Each status the service gives /predict is in the document, with a body that fits
    the schema the document gives it (and Retry-After / X-Model-Version where it says)."""
    document = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    responses = document["paths"]["/predict"]["post"]["responses"]
    key = {"Authorization": f"Bearer {served.key}"}
    json_type = {"Content-Type": "application/json"}
    sent = {
        200: ({**key, **json_type}, json.dumps({"inputs": [_item(served)]})),
        400: ({**key, **json_type}, "{not json"),
        401: (json_type, json.dumps({"inputs": [_item(served)]})),
        413: ({**key, **json_type}, json.dumps({"inputs": ["A" * 1_100_000]})),
        415: ({**key, "Content-Type": "text/plain"}, "x"),
        422: ({**key, **json_type}, json.dumps({"inputs": [_item(served), "nope"]})),
    }
    for status, (headers, body) in sent.items():
        answer = httpx.post(f"{served.url}/predict", content=body, headers=headers, timeout=30)
        assert answer.status_code == status, (status, answer.text[:300])
        documented = responses[str(status)]
        schema = documented["content"]["application/json"]["schema"]
        jsonschema.validate(
            answer.json(),
            {**schema, "components": document["components"]},
            cls=jsonschema.Draft202012Validator,
        )
        for header in documented.get("headers", {}):
            assert header.lower() in answer.headers, (status, header)
    for status in (408, 429, 500, 503, 504):
        assert str(status) in responses, status
    assert (
        "Retry-After" in responses["429"]["headers"]
        and "Retry-After" in responses["503"]["headers"]
    )


# -- 2: the Python client ----------------------------------------------------------------


def test_the_client_predicts_and_names_what_is_wrong(served: Served) -> None:
    with Client(served.url, served.key) as client:
        found = client.predict([_item(served), _item(served, 0)])
        raw = httpx.post(
            f"{served.url}/predict",
            json={"inputs": [_item(served), _item(served, 0)]},
            headers={"Authorization": f"Bearer {served.key}"},
            timeout=30,
        )
        assert found.outputs == raw.json()["outputs"] and found.version == raw.json()["version"]
        assert found.model == "digits" and client.metadata()["name"] == "digits"
        assert client.ready()
        with pytest.raises(InvalidInput) as invalid:
            client.predict([_item(served), "nope"])
        assert (invalid.value.index, invalid.value.field) == (1, "image")
        assert "inputs[1] (field 'image')" in str(invalid.value)
    with Client(served.url, "wrong") as client, pytest.raises(Unauthorized) as refused:
        client.predict([_item(served)])
    assert refused.value.status == 401
    closed = f"http://127.0.0.1:{free_port()}"
    with Client(closed, timeout=2) as client, pytest.raises(ServiceUnreachable) as gone:
        client.predict([_item(served)])
    assert "cannot be reached" in str(gone.value) and not Client(closed).ready()


def test_the_async_client_answers_concurrent_calls(served: Served) -> None:
    items = [_item(served, n % 4) for n in range(16)]

    async def calls() -> list[Any]:
        async with AsyncClient(served.url, served.key) as client:
            answers = await asyncio.gather(*(client.predict([item]) for item in items))
            with pytest.raises(InvalidInput):
                await client.predict(["nope"])
            return [a.outputs[0] for a in answers]

    with Client(served.url, served.key) as client:
        expected = client.predict(items).outputs
    assert asyncio.run(calls()) == expected


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The sleepy model, one request at a time (PROTO2PROD_MAX_CONCURRENCY=1): 429s with
    Retry-After for the rest."""
    home = tmp_path_factory.mktemp("crowded")
    sleepy_versions(home, production=0)
    log = home / "service.log"
    env = {"PROTO2PROD_MAX_CONCURRENCY": "1"}
    with running_service(home, "sleepy@production", log, **env) as url:
        yield url


def _at_once(url: str, budget: float, n: int = 4) -> list[object]:
    def call(_: int) -> object:
        with Client(url, retry_budget_s=budget) as client:
            try:
                return client.predict([0.4]).outputs[0]
            except Overloaded as overloaded:
                return overloaded

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def test_the_client_waits_out_retry_after_within_its_budget(crowded: str) -> None:
    assert _at_once(crowded, budget=15) == [pytest.approx(0.8)] * 4  # after a 429 or more
    found = _at_once(crowded, budget=0)
    refused = [f for f in found if isinstance(f, Overloaded)]
    assert refused and all("retry budget" in str(f) for f in refused)
    assert any("429" in str(f) for f in refused)


# -- 3: the model as an MCP tool ---------------------------------------------------------


def _mcp(url: str, key: str | None, call: dict[str, Any]) -> tuple[Any, Any, Any]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def session() -> tuple[Any, Any, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with (
            httpx.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            tools = await client.list_tools()
            good = await client.call_tool("digits", call)
            bad = await client.call_tool("digits", {"image": "nope"})
            return tools, good, bad

    return asyncio.run(session())


def test_the_model_is_an_mcp_tool_behind_the_same_keys(served: Served) -> None:
    tools, good, bad = _mcp(served.url, served.key, {"image": _item(served)})
    (tool,) = tools.tools
    model = served.definition.model
    assert tool.name == "digits" and tool.description == model.description
    assert tool.inputSchema["required"] == ["image"]
    assert tool.inputSchema["properties"]["image"] == model.inputs.json_schema()
    with Client(served.url, served.key) as client:
        expected = client.predict([_item(served)])
    assert good.isError is False
    assert good.structuredContent == {**expected.outputs[0], "version": expected.version}
    assert bad.isError is True and "inputs[0] (field 'image')" in bad.content[0].text
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401)):
        answer = httpx.post(f"{served.url}/mcp", json=init, headers={**accept, **headers})
        assert answer.status_code == status and answer.json()["error"] == "Unauthorized"


# -- 4: the command line -----------------------------------------------------------------


def test_the_cli_has_version_completion_and_json(served: Served) -> None:
    from proto2prod import __version__

    assert cli(served.home, "--version").stdout.strip() == f"proto2prod {__version__}"
    completing = cli(
        served.home,
        _PROTO2PROD_COMPLETE="complete_bash",
        COMP_WORDS="proto2prod pro",
        COMP_CWORD="1",
    )
    assert completing.stdout.split() == ["promote", "prototype"]
    moved = cli(served.home, "promote", "digits", "1", "--alias", "staging", "--json")
    expected = {"name": "digits", "alias": "staging", "version": "1", "was": None}
    assert json.loads(moved.stdout) == expected
    for args in (["versions", "digits"], ["keys", "list"], ["settings"]):
        listed = cli(served.home, *args, "--json")
        assert listed.returncode == 0 and isinstance(json.loads(listed.stdout), list), args


# -- 5: the Node front end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def web_node() -> Path:
    """examples/web-node with its packages (`npm ci`, as its README says)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail(
            "Node.js 20 and npm are needed for examples/web-node (the machine image has them)"
        )
    if not (WEB_NODE / "node_modules").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB_NODE, check=True, timeout=600
        )
    return WEB_NODE


def test_the_node_client_is_generated_from_the_document_and_type_checks(
    served: Served, web_node: Path, tmp_path: Path
) -> None:
    """The committed openapi.json and api.d.ts are what `proto2prod openapi` and
    openapi-typescript give today, and server.js type-checks against them."""
    printed = cli(served.home, "openapi", "examples/digits.py")
    assert json.loads(printed.stdout) == json.loads((web_node / "openapi.json").read_text())
    generated = tmp_path / "api.d.ts"
    bin_ = web_node / "node_modules" / ".bin"
    generate = [str(bin_ / "openapi-typescript"), str(web_node / "openapi.json")]
    subprocess.run([*generate, "-o", str(generated)], check=True, capture_output=True, timeout=120)
    assert generated.read_text() == (web_node / "api.d.ts").read_text(), "npm run generate"
    checked = subprocess.run(
        [str(bin_ / "tsc"), "--noEmit"], cwd=web_node, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout[-2000:]


def _node(web_node: Path, service: str, log: Path, **env: str) -> Any:
    port = free_port()
    environ = {**os.environ, "SERVICE_URL": service, "PORT": str(port), **env}
    proc = server(
        ["node", str(web_node / "server.js")], f"http://127.0.0.1:{port}/healthz", log, env=environ
    )
    return port, proc


def test_the_node_server_forwards_bodies_statuses_and_failures(
    served: Served, web_node: Path, tmp_path: Path
) -> None:
    port, started = _node(web_node, served.url, tmp_path / "node.log", API_KEY=served.key)
    with started:
        node = f"http://127.0.0.1:{port}"
        for items in ([_item(served)], [_item(served), "nope"]):
            body = {"inputs": items}
            through = httpx.post(f"{node}/predict", json=body, timeout=30)
            direct = httpx.post(
                f"{served.url}/predict",
                json=body,
                headers={"Authorization": f"Bearer {served.key}"},
                timeout=30,
            )
            assert (through.status_code, through.json()) == (direct.status_code, direct.json())
        assert through.status_code == 422
        assert httpx.post(f"{node}/predict", json={"inputs": [_item(served)]}).headers[
            "x-model-version"
        ]
        # the typed client (openapi-fetch) reads /metadata for the page
        model = httpx.get(f"{node}/model", timeout=30).json()
        assert model == {
            "name": "digits",
            "version": "1",
            "reference": "digits@production",
            "ready": True,
        }
    keyless, started = _node(web_node, served.url, tmp_path / "keyless.log")
    with started:
        refused = httpx.post(
            f"http://127.0.0.1:{keyless}/predict", json={"inputs": [_item(served)]}
        )
        assert refused.status_code == 401 and refused.json()["error"] == "Unauthorized"
    dead, started = _node(web_node, f"http://127.0.0.1:{free_port()}", tmp_path / "dead.log")
    with started:
        gone = httpx.post(f"http://127.0.0.1:{dead}/predict", json={"inputs": [1]}, timeout=30)
        assert (
            gone.status_code == 502 and "cannot reach the model service" in gone.json()["message"]
        )


def test_the_node_server_honours_retry_after_and_times_out(
    crowded: str, web_node: Path, tmp_path: Path
) -> None:
    def at_once(port: int) -> list[httpx.Response]:
        def call(_: int) -> httpx.Response:
            return httpx.post(
                f"http://127.0.0.1:{port}/predict", json={"inputs": [0.4]}, timeout=30
            )

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return list(pool.map(call, range(4)))

    patient, started = _node(web_node, crowded, tmp_path / "patient.log", RETRY_BUDGET_MS="15000")
    with started:
        assert [r.status_code for r in at_once(patient)] == [200] * 4
    hasty, started = _node(web_node, crowded, tmp_path / "hasty.log", RETRY_BUDGET_MS="0")
    with started:
        found = at_once(hasty)
        passed_on = [r for r in found if r.status_code == 429]
        assert passed_on and all(r.headers["retry-after"] for r in passed_on)
    slow, started = _node(web_node, crowded, tmp_path / "slow.log", TIMEOUT_MS="300")
    with started:
        late = httpx.post(f"http://127.0.0.1:{slow}/predict", json={"inputs": [1.0]}, timeout=30)
        assert late.status_code == 504 and "within 0.3 s" in late.json()["message"]


def test_the_node_page_uploads_draws_and_shows_errors_in_chromium(
    served: Served, web_node: Path, tmp_path: Path
) -> None:
    from proto2prod import fields
    from proto2prod.examples.digits import load_split
    from tests.test_prototype import _browser, _shot_path

    _, x_test, _, _ = load_split()
    png = tmp_path / "digit.png"
    encoded = fields.Image.to_png_base64(x_test[5])
    png.write_bytes(base64.b64decode(encoded))
    with Client(served.url, served.key) as client:
        expected = client.predict([encoded]).outputs[0]["label"]
    port, started = _node(web_node, served.url, tmp_path / "node.log", API_KEY=served.key)
    dead, dead_started = _node(web_node, f"http://127.0.0.1:{free_port()}", tmp_path / "dead.log")
    manager, browser = _browser()
    try:
        with started, dead_started:
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#upload", str(png))
            page.wait_for_selector("#preview[src^='data:image/png']", state="attached")
            page.click("#predict-upload")
            page.wait_for_selector("#answer:not([hidden])")
            assert page.inner_text("#label") == expected
            assert page.inner_text("#version") == "1"
            assert page.inner_text("#served") == "Serving digits@production, version 1."
            box = page.locator("#sketch").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + 70, box["y"] + 25)
            page.mouse.down()
            page.mouse.move(box["x"] + 72, box["y"] + 115, steps=12)
            page.mouse.up()
            page.click("#predict-drawing")
            page.wait_for_selector("#answer:not([hidden])")
            drawn = page.evaluate("document.querySelector('#sketch').toDataURL('image/png')")
            with Client(served.url, served.key) as client:
                said = client.predict([drawn.split(",", 1)[1]]).outputs[0]["label"]
            assert page.inner_text("#label") == said  # the drawing's answer, not the upload's
            page.screenshot(path=str(_shot_path("web-node.png", tmp_path)), full_page=True)
            page.goto(f"http://127.0.0.1:{dead}/")
            page.click("#predict-drawing")
            page.wait_for_selector("#error", state="visible")
            shown = page.inner_text("#error")
            assert "could not answer (502)" in shown and "cannot reach the model service" in shown
    finally:
        browser.close()
        manager.stop()


def test_gradio_mcp_passes_through(served: Served, tmp_path: Path) -> None:
    """`proto2prod prototype --mcp`: Gradio's own MCP server lists the app's functions."""
    args = ["--backend", served.url, "--mcp"]
    log = tmp_path / "ui.log"
    with running_prototype(served.home, args, log, PROTO2PROD_API_KEY=served.key) as (url, _):
        schema = httpx.get(f"{url}/gradio_api/mcp/schema", timeout=30).json()
    assert "predict" in {tool["meta"]["endpoint_name"].strip("/") for tool in schema}, schema
    refused = cli(served.home, "prototype", "--ui", "streamlit", "--mcp", "--backend", served.url)
    assert refused.returncode == 2 and "--mcp is Gradio's MCP server" in refused.stderr
