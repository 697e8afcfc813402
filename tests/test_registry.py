"""Registry round trip on the embedded SQLite store AND a real `mlflow server` (no mocks)."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import mlflow
import pytest

from proto2prod import (
    Definition,
    IncompatibleVersion,
    IntegrityError,
    InvalidReference,
    ModelNotFound,
    RegistryUnavailable,
    Settings,
    Trained,
)
from proto2prod.predictor import Predictor
from proto2prod.registry import ModelRef, Registry, fetch, publish
from proto2prod.registry.client import history_tag, log_tag
from proto2prod.registry.publish import WEIGHTS
from tests.compare import assert_same_outputs


@pytest.fixture
def registry(settings: Settings) -> Registry:
    return Registry(settings)


def test_publish_promote_rollback_fetch(
    registry: Registry, digits: Definition, digits_quick: Trained, digits_trained: Trained
) -> None:
    v1 = publish(registry, digits, digits_quick, alias="staging")
    v2 = publish(registry, digits, digits_trained)
    assert int(v2.version) == int(v1.version) + 1
    assert v1.uri == f"models:/digits/{v1.version}"

    listed = {v.version: v for v in registry.versions("digits")}
    assert listed[v1.version].aliases == ["staging"]
    assert listed[v2.version].metrics["accuracy"] == pytest.approx(
        digits_trained.metrics["accuracy"]
    )
    assert listed[v2.version].run_id == v2.run_id

    registry.promote("digits", v1.version, "production")
    assert registry.promote("digits", v2.version, "production") == v1.version
    assert registry.resolve("digits@production").version == v2.version
    assert registry.resolve("models:/digits@staging").version == v1.version
    assert registry.resolve(f"digits/{v1.version}").version == v1.version
    assert registry.resolve("digits").version == v2.version  # newest
    assert registry.resolve("digits/latest").version == v2.version  # MLflow's spelling

    assert registry.rollback("digits", "production") == (v2.version, v1.version)
    assert registry.resolve("digits@production").version == v1.version

    local = fetch(registry, "digits@staging")
    assert local.info.version == v1.version
    assert local.weights.is_file() and (local.path / "version.json").is_file()
    cached = Predictor(digits.model, local.weights, "cpu")
    direct = Predictor(digits.model, digits_quick.weights, "cpu")
    items = digits.model.examples()
    assert cached.predict_batch(items) == direct.predict_batch(items)
    assert fetch(registry, f"digits/{v1.version}").path == local.path  # cached once


def test_pyfunc_by_alias_gives_the_predictor_outputs(
    registry: Registry, digits: Definition, digits_trained: Trained
) -> None:
    published = publish(registry, digits, digits_trained, alias="staging")
    items = digits.model.examples() + [
        digits.model.inputs.to_png_base64(digits.model.examples()[1])
    ]  # type: ignore[attr-defined]
    mlflow.set_tracking_uri(registry.uri)
    pyfunc = mlflow.pyfunc.load_model("models:/digits@staging")
    expected = Predictor(digits.model, digits_trained.weights, "cpu").predict_batch(items)
    assert_same_outputs(pyfunc.predict(items), expected, tol=1e-6)
    meta = pyfunc.metadata.metadata["proto2prod"]
    assert meta["spec"] == digits.model.spec()
    assert meta["schema"]["inputs"] == digits.model.inputs.json_schema()
    info = registry.resolve(f"digits/{published.version}")
    # what the cache verifies, only: the weights and the reference statistics
    assert set(info.sha256) == {"weights.safetensors", "reference_stats.json"}
    assert info.tags["proto2prod.entry"] == "proto2prod.examples.digits:Digits"


def test_no_pickle_among_the_artifacts(
    registry: Registry, digits: Definition, digits_quick: Trained, tmp_path: Path
) -> None:
    published = publish(registry, digits, digits_quick)
    mlflow.set_tracking_uri(registry.uri)
    root = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/digits/{published.version}", dst_path=str(tmp_path / "all")
        )
    )
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == WEIGHTS for p in files)
    for path in files:
        assert path.suffix not in (".pkl", ".pickle", ".pt", ".pth", ".joblib"), path
        assert path.read_bytes()[:1] != b"\x80", f"{path} starts like a pickle stream"


def test_corrupted_cache_is_refused(
    registry: Registry, digits: Definition, digits_quick: Trained
) -> None:
    published = publish(registry, digits, digits_quick)
    local = fetch(registry, f"digits/{published.version}")
    data = bytearray(local.weights.read_bytes())
    data[-1] ^= 0xFF
    local.weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="refusing to load it") as caught:
        fetch(registry, f"digits/{published.version}")
    assert str(local.path) in str(caught.value)


def test_weights_that_do_not_fit_leave_no_version(
    registry: Registry, digits: Definition, digits_quick: Trained
) -> None:
    publish(registry, digits, digits_quick)
    before = [v.version for v in registry.versions("digits")]
    broken = Trained(weights={k: v[..., :1] for k, v in digits_quick.weights.items()})
    with pytest.raises(IncompatibleVersion):
        publish(registry, digits, broken, alias="production")
    with pytest.raises(InvalidReference, match="not a usable alias"):
        publish(registry, digits, digits_quick, alias="latest")
    assert [v.version for v in registry.versions("digits")] == before


def test_unknown_names_versions_and_aliases(
    registry: Registry, digits: Definition, digits_quick: Trained
) -> None:
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        registry.resolve("nope@production")
    publish(registry, digits, digits_quick)
    with pytest.raises(ModelNotFound, match="has no alias 'canary'"):
        registry.resolve("digits@canary")
    with pytest.raises(ModelNotFound, match="has no version 999"):
        registry.promote("digits", 999)
    with pytest.raises(ModelNotFound, match="model 'digits' has no alias 'qa' to roll back"):
        registry.rollback("digits", "qa")  # never set
    registry.promote("digits", 1, alias="qa")
    with pytest.raises(ModelNotFound, match="digits@qa has no earlier version recorded"):
        registry.rollback("digits", "qa")  # set once: nothing to go back to


def test_rollback_history_is_a_registered_model_tag(
    embedded: Settings, digits: Definition, digits_quick: Trained
) -> None:
    registry = Registry(embedded)
    a = publish(registry, digits, digits_quick, alias="production")
    b = publish(registry, digits, digits_quick, alias="production")
    tags = registry.client.get_registered_model("digits").tags
    assert json.loads(tags[history_tag("production")]) == [{"from": a.version, "to": b.version}]
    assert registry.rollback("digits") == (b.version, a.version)
    with pytest.raises(ModelNotFound, match="no earlier version recorded"):
        registry.rollback("digits")
    log = json.loads(registry.client.get_registered_model("digits").tags[log_tag("production")])
    assert [(e["action"], e["from"], e["to"]) for e in log] == [
        ("promote", None, a.version),
        ("promote", a.version, b.version),
        ("rollback", b.version, a.version),
    ]
    stamps = [datetime.datetime.fromisoformat(e["at"]) for e in log]
    now = datetime.datetime.now(datetime.UTC)
    assert stamps == sorted(stamps) and all(abs(now - t).total_seconds() < 600 for t in stamps)


def test_unreachable_tracking_server_fails_fast_and_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.processes import free_port

    settings = Settings.from_env(
        {"PROTO2PROD_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    )
    # What proto2prod's own processes do at start-up; a library call never writes the env.
    for key, value in settings.mlflow_environment().items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="cannot reach the MLflow tracking server"):
        Registry(settings).versions("digits")
    assert time.monotonic() - started < 30


def test_model_refs_parse() -> None:
    assert ModelRef.parse("models:/digits@production") == ModelRef("digits", alias="production")
    assert ModelRef.parse("digits/3") == ModelRef("digits", version="3")
    assert str(ModelRef.parse("digits")) == "digits"
    assert ModelRef.parse("digits/latest") == ModelRef.parse("models:/digits/latest")
    assert ModelRef.parse("digits/latest") == ModelRef("digits")  # the newest, as MLflow means
    with pytest.raises(InvalidReference, match="not a model reference"):
        ModelRef.parse("digits@@x")


def test_the_library_leaves_its_callers_process_alone(
    registry: Registry,
    digits: Definition,
    digits_quick: Trained,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Publish, promote, list, fetch and a service runtime write nothing to os.environ and
    leave MLflow's global URI as the caller set it (here: somewhere else entirely, which also
    proves nothing of ours falls back to the caller's registry)."""
    import os

    from mlflow.tracking._tracking_service import utils as tracking_utils

    from proto2prod.service.runtime import ModelRuntime
    from proto2prod.settings import ServiceSettings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/the-callers-own")
    monkeypatch.setattr(tracking_utils, "_tracking_uri", "sqlite:////nonexistent/callers.db")

    def ours_to_hold() -> dict[str, str]:  # MLflow's telemetry sets and drops its own id
        return {k: v for k, v in os.environ.items() if k != "_MLFLOW_TELEMETRY_SESSION_ID"}

    environ = ours_to_hold()

    v1 = publish(registry, digits, digits_quick, alias="production")
    v2 = publish(registry, digits, digits_quick)
    registry.promote("digits", v2.version, "production")
    registry.rollback("digits", "production")
    assert [v.version for v in registry.versions("digits")][:2] == [v2.version, v1.version]
    fetch(registry, "digits@production")
    runtime = ModelRuntime(ServiceSettings(model="digits@production"), digits, registry)
    runtime.start()
    assert runtime.ready and runtime.current is not None
    assert runtime.current.version == v1.version

    assert ours_to_hold() == environ
    import mlflow

    assert mlflow.get_tracking_uri() == "sqlite:////nonexistent/callers.db"
