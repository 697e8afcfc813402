"""The models people bring, end to end: a text classifier over token ids, two named inputs
and outputs, segmentation with boxes, embeddings. Each is trained (quick), registered,
served by a real `bentoml serve` with a shadow challenger and drift tracking, and shown by
the real Gradio and Streamlit apps, in-process and in front of the service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client

from proto2prod import Definition, NullProgress, Settings, Trained, load_definition
from proto2prod.predictor import Predictor
from proto2prod.registry import Registry, publish
from tests.conftest import BIN, EXAMPLES, ROOT
from tests.processes import free_port, server
from tests.service_process import running_prototypes, running_service_process, until
from tests.test_rollouts import noisy

# Held-out metric after the quick training (measured on this machine: reviews 1.0,
# counting count_accuracy 0.96, segment box_f1 0.82, embed recall_at_1 0.98).
FLOORS = {
    "reviews": ("accuracy", 0.9),
    "counting": ("count_accuracy", 0.85),
    "segment": ("box_f1", 0.7),
    "embed": ("recall_at_1", 0.9),
}
# One item whose sub-field is wrong, sent second, and what the 422 must name.
BAD = {
    "reviews": (17, "inputs[1] (field 'review'): got an integer"),
    "counting": ({"image": [[0, 0], [0, 0]], "shape": 5}, "inputs[1].shape: got an integer"),
    "segment": ("bm90IGFuIGltYWdl", "inputs[1] (field 'image'): the string decodes to bytes"),
    "embed": ([1.0] * 63, "inputs[1] (field 'pixels'): got shape [63]"),
}
pytestmark = pytest.mark.server


@dataclass
class Served:
    name: str
    definition: Definition
    trained: Trained
    home: Path
    url: str
    version: str


@pytest.fixture(scope="module", params=sorted(FLOORS))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The example trained (quick), published as production and a noisy challenger, and the
    service on production with the challenger as its shadow and a small drift window."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    definition = load_definition(EXAMPLES / f"{name}.py")
    trained = definition.model.train(NullProgress(), quick=True)
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(root / "home")}))
    version = publish(registry, definition, trained, alias="production").version
    publish(registry, definition, noisy(trained, 0.5), alias="challenger")
    with running_service_process(
        root / "home",
        f"{name}@production",
        root / "service.log",
        PROTO2PROD_SHADOW="challenger",
        PROTO2PROD_SHADOW_RATE="1.0",
        PROTO2PROD_DRIFT_WINDOW="40",
        PROTO2PROD_SHADOW_LOG_S="600",
    ) as (url, _):
        yield Served(name, definition, trained, root / "home", url, version)


def test_the_example_trains_quickly_to_its_held_out_floor(served: Served) -> None:
    metric, floor = FLOORS[served.name]
    assert served.trained.metrics[metric] >= floor, served.trained.metrics
    outputs = Predictor(served.definition.model, served.trained.weights, "cpu").predict_batch(
        served.definition.model.examples()
    )
    for output in outputs:
        assert served.definition.model.outputs.output_problem(output) is None


def test_the_service_batches_answers_refuses_a_bad_sub_field_and_tracks_drift_and_shadow(
    served: Served,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = served.definition.model
    examples = model.examples()
    expected = Predictor(model, served.trained.weights, "cpu").predict_batch(examples)

    def ask(i: int) -> httpx.Response:
        item = examples[i % len(examples)]
        return httpx.post(f"{served.url}/predict", json={"inputs": [item]}, timeout=30)

    with ThreadPoolExecutor(16) as pool:  # concurrent single-item requests: merged in batches
        answers = list(pool.map(ask, range(64)))
    assert {a.status_code for a in answers} == {200}
    for i, answer in enumerate(answers):
        assert answer.headers["X-Model-Version"] == served.version
        got, want = answer.json()["outputs"][0], expected[i % len(examples)]
        assert model.outputs.compare(want, got).agree, (got, want)
    metrics = httpx.get(f"{served.url}/metrics").text
    batched = [
        line for line in metrics.splitlines() if line.startswith("proto2prod_batch_size_sum")
    ]
    count = [
        line for line in metrics.splitlines() if line.startswith("proto2prod_batch_size_count")
    ]
    assert batched and count and float(batched[0].split()[-1]) > float(count[0].split()[-1])

    bad, named = BAD[served.name]
    refused = httpx.post(f"{served.url}/predict", json={"inputs": [examples[0], bad]}, timeout=30)
    assert refused.status_code == 422, refused.text
    assert named in refused.json()["message"], refused.json()
    assert refused.json()["index"] == 1

    def measured() -> dict[str, Any] | None:
        found = httpx.get(f"{served.url}/metadata", timeout=10).json()
        drift, shadow = found["drift"], found["rollout"]["shadow"]
        return found if drift.get("items", 0) >= 40 and shadow and shadow["compared"] else None

    found = until(measured, 60, "drift measured and the shadow compared")
    statistics = found["drift"]["statistics"]
    assert all(name.startswith(("input.", "output.")) for name in statistics)
    for part, _ in model.inputs.parts():
        prefix = f"input.{part}." if len(model.inputs.parts()) > 1 else "input."
        assert any(name.startswith(prefix) for name in statistics), statistics
    for part, _ in model.outputs.parts():
        prefix = f"output.{part}." if len(model.outputs.parts()) > 1 else "output."
        assert any(name.startswith(prefix) for name in statistics), statistics
    shadow = found["rollout"]["shadow"]
    assert shadow["failed"] == 0 and shadow["agreement"] is not None
    assert shadow["mean_abs_delta"] is not None and shadow["mean_abs_delta"] >= 0


def test_pyfunc_takes_and_gives_what_the_service_does(served: Served) -> None:
    import mlflow

    model = served.definition.model
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(served.home)}))
    with registry.fluent():
        loaded = mlflow.pyfunc.load_model(f"models:/{served.name}@production")
    examples = model.examples()
    outputs = loaded.predict(examples)
    service = httpx.post(f"{served.url}/predict", json={"inputs": examples}, timeout=30).json()
    assert len(outputs) == len(examples)
    for mine, theirs in zip(outputs, service["outputs"], strict=True):
        assert model.outputs.compare(theirs, mine).agree
    if len(model.inputs.parts()) > 1:  # named inputs: one named column each in MLflow
        columns = loaded.metadata.signature.inputs.input_names()
        assert columns == [key for key, _ in model.inputs.parts()]


def test_gradio_and_streamlit_in_process_and_remote(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    model = served.definition.model
    example = model.examples()[0]
    expected = Predictor(model, served.trained.weights, "cpu").predict(example)
    definition = str(EXAMPLES / f"{served.name}.py")
    in_args = [definition, "--model", f"{served.name}@production"]
    remote_args = ["--backend", served.url]
    with running_prototypes(served.home, [in_args, remote_args], tmp_path) as (in_process, remote):
        for url, where in ((in_process, "(in-process)"), (remote, f"(service {served.url})")):
            client = Client(url, verbose=False)
            parts = zip(model.inputs.parts(), model.inputs.split(example), strict=True)
            values = [_gradio_value(field, v, tmp_path) for (_, field), v in parts]
            *shown, note = client.predict(*values, api_name="/predict")
            assert note.endswith(f"version {served.version}** {where}"), note
            assert len(shown) == len(model.outputs.parts())
        _screenshots(served, in_process, remote, tmp_path)

    script = str(ROOT / "prototype" / "streamlit_app.py")
    monkeypatch.setenv("PROTO2PROD_HOME", str(served.home))
    for env in (
        {
            "PROTO2PROD_UI_DEFINITION": definition,
            "PROTO2PROD_UI_MODEL": f"{served.name}@production",
        },
        {"PROTO2PROD_UI_BACKEND": served.url},
    ):
        for key in ("PROTO2PROD_UI_DEFINITION", "PROTO2PROD_UI_MODEL", "PROTO2PROD_UI_BACKEND"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = AppTest.from_file(script, default_timeout=120).run()
        assert not app.exception, app.exception
        app.button[0].click().run()
        assert not app.exception and not app.error, [e.value for e in app.error]
        assert f"Answered by {served.name} version {served.version}" in app.caption[-1].value
        if served.name == "reviews":
            assert app.metric[0].value == expected["label"]
        if served.name == "counting":
            assert app.metric[0].value == f"{expected['count']:.4g}"


def _gradio_value(field: Any, value: Any, folder: Path) -> Any:
    """What gradio_client sends for one input component: a file for an image."""
    import base64

    from gradio_client import handle_file

    if field.takes_images:
        path = folder / f"{field.name}.png"
        path.write_bytes(base64.b64decode(field.browser_item(value)))
        return handle_file(str(path))
    return field.gradio_example(value)


def _screenshots(served: Served, in_process: str, remote: str, tmp_path: Path) -> None:
    """What a person sees, in a real browser: the first example, predicted, both ways."""
    from tests.test_prototype import _browser, _shot_path

    manager, browser = _browser()
    try:
        for url, mode in ((in_process, "in-process"), (remote, "remote")):
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(url)
            page.locator(".gallery-item, tr.tr-body").first.click()  # one input: a gallery
            page.get_by_role("button", name="Predict", exact=True).click()
            page.wait_for_selector("text=Answered by", timeout=30_000)
            page.wait_for_load_state("networkidle")  # output pictures are fetched by URL
            path = _shot_path(f"gradio-{served.name}-{mode}.png", tmp_path)
            page.screenshot(path=str(path), full_page=True)
            assert path.stat().st_size > 10_000
            page.close()
    finally:
        browser.close()
        manager.stop()


def test_mlflow_models_serve_answers_named_columns(tmp_path: Path) -> None:
    """`mlflow models serve` on a two-input version: records in, objects keyed by output."""
    definition = load_definition(EXAMPLES / "counting.py")
    trained = definition.model.train(NullProgress(), quick=True)
    home = tmp_path / "home"
    publish(
        Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)})),
        definition,
        trained,
        alias="production",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/counting@production",
        "--env-manager",
        "local",
        "-p",
        str(port),
    ]
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }
    examples = definition.model.examples()[:2]
    with server(args, f"{url}/ping", tmp_path / "serve.log", env=env, timeout=150):
        for body in ({"dataframe_records": examples}, {"inputs": examples}):
            answer = httpx.post(f"{url}/invocations", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            predictions = answer.json()["predictions"]
            assert [set(p) for p in predictions] == [{"count", "present"}] * 2
    expected = Predictor(definition.model, trained.weights, "cpu").predict_batch(examples)
    assert [p["count"] for p in predictions] == [e["count"] for e in expected]


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_build_makes_a_bento_of_the_example(name: str, tmp_path: Path) -> None:
    import subprocess

    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PROTO2PROD_HOME": str(tmp_path / "home"),
    }
    done = subprocess.run(
        [
            str(BIN / "proto2prod"),
            "build",
            f"{name}@production",
            "--definition",
            str(EXAMPLES / f"{name}.py"),
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
    assert f"built Bento {name}:t1" in done.stdout
    manifest = (tmp_path / "bentoml" / "bentos" / name / "t1" / "bento.yaml").read_text()
    assert f"{name}@production" in manifest
