"""The Gradio and Streamlit prototypes as real apps: in-process, and in front of the service."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file

from proto2prod import Definition, NullProgress, Settings, Trained, fields, load_definition
from proto2prod.predictor import Predictor
from proto2prod.registry import Registry, publish
from tests.conftest import EXAMPLES, ROOT
from tests.processes import stop
from tests.service_process import running_prototype, running_service_process, until

pytestmark = pytest.mark.server
SCREENSHOTS = ROOT / "docs" / "screenshots"


@dataclass
class Stack:
    home: Path
    version: str
    service: str
    in_process: str
    remote: str
    pngs: list[Path]
    labels: np.ndarray


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, digits: Definition, digits_trained: Trained
) -> Iterator[Stack]:
    """digits@production in a registry, the service on it, and both kinds of Gradio app."""
    from proto2prod.examples.digits import load_split

    root = tmp_path_factory.mktemp("prototype")
    home = root / "home"
    version = publish(
        Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)})),
        digits,
        digits_trained,
        alias="production",
    ).version
    _, x_test, _, y_test = load_split()
    pngs = []
    for i, image in enumerate(x_test[:100]):
        path = root / f"digit{i}.png"
        path.write_bytes(base64.b64decode(fields.Image.to_png_base64(image)))
        pngs.append(path)
    in_args = [str(EXAMPLES / "digits.py"), "--model", "digits@production"]
    with (
        running_service_process(home, "digits@production", root / "service.log") as (svc, _),
        running_prototype(home, in_args, root / "in-process.log") as (in_process, _),
        running_prototype(home, ["--backend", svc], root / "remote.log") as (remote, _),
    ):
        yield Stack(home, version, svc, in_process, remote, pngs, y_test[:100])


def ask(url: str, png: Path) -> tuple[dict[str, object], str]:
    return Client(url, verbose=False).predict(handle_file(str(png)), api_name="/predict")


def test_gradio_in_process_reads_held_out_digits(stack: Stack) -> None:
    client = Client(stack.in_process, verbose=False)
    hits = 0
    for png, label in zip(stack.pngs, stack.labels, strict=True):
        shown, note = client.predict(handle_file(str(png)), api_name="/predict")
        hits += shown["label"] == str(label)
    assert hits / len(stack.pngs) >= 0.95
    assert note == f"Answered by **digits version {stack.version}** (in-process)"


def test_remote_mode_gives_the_same_answers_and_names_the_served_version(stack: Stack) -> None:
    local, remote = Client(stack.in_process, verbose=False), Client(stack.remote, verbose=False)
    for png in stack.pngs[:15]:
        a, _ = local.predict(handle_file(str(png)), api_name="/predict")
        b, note = remote.predict(handle_file(str(png)), api_name="/predict")
        assert a["label"] == b["label"]
        scores_a = {c["label"]: c["confidence"] for c in a["confidences"]}
        scores_b = {c["label"]: c["confidence"] for c in b["confidences"]}
        assert scores_a == pytest.approx(scores_b, abs=1e-4)
    served = httpx.get(f"{stack.service}/metadata").json()["version"]
    assert note == f"Answered by **digits version {served}** (service {stack.service})"


def test_the_drawing_route_reads_ink_on_transparent_paper(stack: Stack) -> None:
    """The sketchpad hands over RGBA: a transparent background and black ink strokes."""
    from PIL import Image

    from proto2prod.examples.digits import load_split

    _, x_test, _, y_test = load_split()
    client = Client(stack.in_process, verbose=False)
    hits = 0
    for digit in range(10):
        i = int(np.flatnonzero(y_test == digit)[0])
        rgba = np.zeros((280, 280, 4), dtype=np.uint8)
        rgba[20:260, 20:260, 3] = np.kron(x_test[i], np.ones((30, 30))).astype(np.uint8)
        path = stack.home.parent / f"drawing{digit}.png"
        Image.fromarray(rgba, mode="RGBA").save(path)
        editor = {"background": None, "layers": [], "composite": handle_file(str(path))}
        shown, _ = client.predict(editor, api_name="/predict_drawing")
        hits += shown["label"] == str(digit)
    assert hits >= 8, f"{hits}/10 drawings read"


def test_service_refusal_is_a_readable_message(stack: Stack) -> None:
    wide = stack.home.parent / "wide.png"
    wide.write_bytes(base64.b64decode(fields.Image.to_png_base64(np.zeros((4, 5000)))))
    shown, note = ask(stack.remote, wide)
    assert "The service refused this input (422)" in note and "4x5000" in note
    assert "Traceback" not in note
    shown, note = ask(stack.remote, stack.pngs[0])
    assert note.startswith("Answered by")


def listening_addresses(url: str) -> set[str]:
    import psutil

    port = int(url.rsplit(":", 1)[1])
    return {
        c.laddr.ip
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def listener(url: str) -> Any:
    """The process listening on `url`'s port."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid:
            return psutil.Process(c.pid)
    raise AssertionError(f"nothing listens on {url}")


def test_gradio_binds_loopback_caps_uploads_and_shows_no_tracebacks(stack: Stack) -> None:
    for url in (stack.in_process, stack.remote):
        assert listening_addresses(url) == {"127.0.0.1"}, url
        big = {"files": ("big.png", b"\x00" * (11 * 1024 * 1024), "image/png")}
        refused = httpx.post(f"{url}/gradio_api/upload", files=big, timeout=30)
        assert refused.status_code == 413, (refused.status_code, refused.text[:200])
        assert "Traceback" not in refused.text
    wide = stack.home.parent / "wide-in-process.png"
    wide.write_bytes(base64.b64decode(fields.Image.to_png_base64(np.zeros((4, 5000)))))
    shown, note = ask(stack.in_process, wide)
    assert "4x5000" in note and "Traceback" not in note and 'File "' not in note


def test_streamlit_apptest_in_process_and_remote(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    script = str(ROOT / "prototype" / "streamlit_app.py")
    monkeypatch.setenv("PROTO2PROD_HOME", str(stack.home))
    in_process = {
        "PROTO2PROD_UI_DEFINITION": str(EXAMPLES / "digits.py"),
        "PROTO2PROD_UI_MODEL": "digits@production",
    }
    for env in (in_process, {"PROTO2PROD_UI_BACKEND": stack.service}):
        for key in ("PROTO2PROD_UI_DEFINITION", "PROTO2PROD_UI_MODEL", "PROTO2PROD_UI_BACKEND"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = AppTest.from_file(script, default_timeout=120).run()
        assert not app.exception, app.exception
        assert app.title[0].value == "Digits"
        app.selectbox[0].set_value("Example 3").run()
        app.button[0].click().run()
        assert not app.error, [e.value for e in app.error]
        assert app.metric[0].value == "7"
        assert f"Answered by digits version {stack.version}" in app.caption[0].value


def _browser():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("Debian's chromium is not installed: .ci/run installs it (apt-get)")
    manager = sync_playwright().start()
    browser = manager.chromium.launch(
        executable_path=chromium,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    return manager, browser


def _shot_path(name: str, tmp_path: Path) -> Path:
    if os.environ.get("PROTO2PROD_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS / name
    return tmp_path / name


def test_gradio_pages_in_a_real_browser(stack: Stack, tmp_path: Path) -> None:
    manager, browser = _browser()
    try:
        for url, name, where in (
            (stack.in_process, "gradio-in-process.png", "(in-process)"),
            (stack.remote, "gradio-remote.png", f"(service {stack.service})"),
        ):
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(url)
            page.locator(".gallery-item").nth(2).click()  # the example 7
            page.wait_for_selector("[id^=input-image] img", timeout=20_000)
            page.get_by_role("button", name="Predict", exact=True).click()
            page.wait_for_selector("text=Answered by", timeout=30_000)
            assert where in page.locator("#answered-by").inner_text()
            assert page.locator("[data-testid='label-output-value']").inner_text().strip() == "7"
            page.screenshot(path=str(_shot_path(name, tmp_path)), full_page=True)
            page.close()
    finally:
        browser.close()
        manager.stop()


def test_streamlit_run_serves_and_shows_the_answer(stack: Stack, tmp_path: Path) -> None:
    args = ["--ui", "streamlit", "--backend", stack.service]
    with running_prototype(stack.home, args, tmp_path / "st.log", health="/_stcore/health") as (
        url,
        _,
    ):
        assert httpx.get(f"{url}/_stcore/health").text == "ok"
        assert listening_addresses(url) == {"127.0.0.1"}
        argv = " ".join(listener(url).cmdline())  # error details: off (no tracebacks shown)
        assert "--client.showErrorDetails false" in argv and "--server.maxUploadSize 10" in argv
        manager, browser = _browser()
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1100})
            page.goto(url)
            page.get_by_role("button", name="Predict").click(timeout=60_000)
            page.wait_for_selector("text=Answered by", timeout=30_000)
            assert page.locator("[data-testid='stMetricValue']").first.inner_text() == "0"
            page.screenshot(path=str(_shot_path("streamlit-remote.png", tmp_path)), full_page=True)
        finally:
            browser.close()
            manager.stop()


def test_tabular_and_heavy_prototypes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    heavy = load_definition(EXAMPLES / "heavy.py")
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))
    trained = heavy.model.train(NullProgress(), quick=True)
    publish(registry, heavy, trained, alias="production")
    wine = load_definition(EXAMPLES / "tabular.py").model
    with running_prototype(home, [str(EXAMPLES / "tabular.py"), "--train"], tmp_path / "w.log") as (
        url,
        _,
    ):
        row = [wine.inputs.decode(wine.examples()[1]).tolist()]  # type: ignore[union-attr]
        table = {"headers": wine.inputs.features, "data": row}  # type: ignore[attr-defined]
        shown, note = Client(url, verbose=False).predict(table, api_name="/predict")
        assert shown["label"] == "class_1" and "trained now" in note
    args = [str(EXAMPLES / "heavy.py"), "--model", "heavy@production"]
    example = heavy.model.examples()[0]
    expected = Predictor(heavy.model, trained.weights, "cpu").predict(example)["label"]
    with running_prototype(home, args, tmp_path / "h.log") as (url, _):
        png = tmp_path / "shape.png"
        png.write_bytes(base64.b64decode(fields.Image.to_png_base64(example)))
        shown, note = ask(url, png)
        assert shown["label"] == expected and "version 1" in note  # what the model says


def test_share_needs_auth_and_says_when_there_is_no_link(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import BIN

    refused = subprocess.run(
        [str(BIN / "proto2prod"), "prototype", str(EXAMPLES / "tabular.py"), "--share"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "add --auth USER:PASSWORD" in refused.stderr
    # With --auth it starts; this machine cannot reach Gradio's share servers, so it says
    # so in one line and serves on loopback (docs/reliability.md, row 12).
    args = [str(EXAMPLES / "tabular.py"), "--train", "--share", "--auth", "ada:secret"]
    log = tmp_path / "share.log"
    with running_prototype(tmp_path / "home", args, log, health="/") as (url, _):
        assert url.startswith("http://127.0.0.1:")
        # the line follows the share attempt, which may end after the app already answers
        until(lambda: "no share link" in log.read_text(), 60, "the no-share-link line")
    text = log.read_text()
    assert "no share link" in text and "Traceback" not in text, text[-2000:]


def test_service_down_shows_a_message_and_the_app_keeps_working(
    stack: Stack, tmp_path: Path
) -> None:
    """Its own service and front end: stopping the module's service would change what the
    tests after this one see."""
    with (
        running_service_process(stack.home, "digits@production", tmp_path / "s.log") as (svc, p),
        running_prototype(stack.home, ["--backend", svc], tmp_path / "r.log") as (remote, _),
    ):
        assert "version" in ask(remote, stack.pngs[0])[1]  # answering
        stop(p)
        for _ in range(2):
            shown, note = ask(remote, stack.pngs[0])
            assert "is not reachable" in note and "proto2prod serve" in note
        assert httpx.get(remote).status_code == 200
