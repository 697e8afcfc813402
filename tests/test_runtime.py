"""The service's model runtime and micro-batcher, in-process (their HTTP side: test_service)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proto2prod import Definition, NullProgress, Settings, Trained, load_definition
from proto2prod.registry import Registry, publish
from proto2prod.service.batcher import MicroBatcher, Overloaded
from proto2prod.service.runtime import ModelRuntime, find_definition
from proto2prod.settings import ServiceSettings, SettingsError
from tests.conftest import EXAMPLES


def variant(tmp_path: Path, old: str, new: str) -> Definition:
    """The digits definition with one line changed (same model name)."""
    source = (EXAMPLES / "digits.py").read_text()
    assert old in source
    path = tmp_path / f"variant_{abs(hash(new))}.py"
    path.write_text(source.replace(old, new))
    return load_definition(path)


@pytest.fixture
def runtime(embedded: Settings, digits: Definition, digits_quick: Trained) -> ModelRuntime:
    publish(Registry(embedded), digits, digits_quick, alias="production")
    rt = ModelRuntime(ServiceSettings(model="digits@production"), digits, Registry(embedded))
    rt.start()
    return rt


def test_start_then_swap_when_the_alias_moves(
    runtime: ModelRuntime, digits: Definition, digits_quick: Trained
) -> None:
    assert runtime.ready and runtime.current is not None
    first = runtime.current
    assert runtime.check()["swapped"] is False
    v2 = publish(runtime.registry, digits, digits_quick, alias="production").version
    result = runtime.check()
    assert result == {"swapped": True, "version": v2, "registry_reachable": True, "error": None}
    assert runtime.current.version == v2 and runtime.swaps == 1
    assert first.predictor is not runtime.current.predictor  # in-flight keep the old one
    meta = runtime.metadata()
    assert meta["version"] == v2 and meta["alias_changed_at"]
    assert meta["device"] == str(runtime.device)  # the device it picked, GPU or not


def test_a_version_with_other_fields_is_refused(runtime: ModelRuntime, tmp_path: Path) -> None:
    other = variant(tmp_path, "top_k=3", "top_k=2")
    trained = other.model.train(NullProgress(), quick=True)
    serving = runtime.current.version  # type: ignore[union-attr]
    bad = publish(runtime.registry, other, trained, alias="production").version
    assert runtime.check()["swapped"] is False
    assert runtime.current.version == serving  # type: ignore[union-attr]
    assert f"digits/{bad}" in (runtime.last_swap_error or "")
    assert "was published with fields" in (runtime.last_swap_error or "")


def test_weights_that_do_not_fit_the_installed_network_are_refused(
    runtime: ModelRuntime, tmp_path: Path
) -> None:
    hidden = "nn.Linear(64 * 4 * 4, {n}),\n            nn.ReLU(),\n            nn.Linear({n}, 10)"
    other = variant(tmp_path, hidden.format(n=128), hidden.format(n=64))
    trained = other.model.train(NullProgress(), quick=True)
    bad = publish(runtime.registry, other, trained, alias="production").version
    runtime.check()
    assert runtime.current.version != bad  # type: ignore[union-attr]
    assert "do not fit Digits.network()" in (runtime.last_swap_error or "")


def test_nothing_to_serve_is_not_ready_with_a_reason(
    embedded: Settings, digits: Definition
) -> None:
    rt = ModelRuntime(ServiceSettings(model="digits@production"), digits, Registry(embedded))
    rt.start()
    assert not rt.ready
    assert "no model named 'digits'" in (rt.metadata()["not_ready_reason"] or "")


def test_definition_must_be_the_served_model(embedded: Settings) -> None:
    config = ServiceSettings(model="wine@production", definition=str(EXAMPLES / "digits.py"))
    from proto2prod import IncompatibleVersion
    from proto2prod.registry import ModelRef

    with pytest.raises(IncompatibleVersion, match="is model 'digits', not 'wine'"):
        find_definition(config, Registry(embedded), ModelRef.parse(config.model))


def test_service_settings_from_env() -> None:
    with pytest.raises(SettingsError, match="PROTO2PROD_MODEL is not set"):
        ServiceSettings.from_env({})
    with pytest.raises(SettingsError, match="PROTO2PROD_POLL_S='soon' is not a number"):
        ServiceSettings.from_env({"PROTO2PROD_MODEL": "d@p", "PROTO2PROD_POLL_S": "soon"})
    config = ServiceSettings.from_env({"PROTO2PROD_MODEL": "d@p", "PROTO2PROD_BATCH_WAIT_MS": "0"})
    assert config.batch_wait_ms == 0 and config.poll_s == 10


def test_request_bounds_fit_together_or_say_which_to_change() -> None:
    def config(**env: str) -> ServiceSettings:
        return ServiceSettings.from_env({"PROTO2PROD_MODEL": "d@p", **env})

    assert (config().max_items, config().max_inflight_mb, config().body_timeout_s) == (256, 32, 10)
    # Unset, the item cap follows a lowered queue and the body budget a raised body limit.
    assert config(PROTO2PROD_MAX_QUEUE="4").max_items == 4
    assert config(PROTO2PROD_MAX_BODY_MB="64").max_inflight_mb == 64
    with pytest.raises(SettingsError, match="MAX_ITEMS=8 is more than PROTO2PROD_MAX_QUEUE=4"):
        config(PROTO2PROD_MAX_QUEUE="4", PROTO2PROD_MAX_ITEMS="8")
    with pytest.raises(SettingsError, match="MAX_INFLIGHT_MB=8 is less than PROTO2PROD_MAX_BODY"):
        config(PROTO2PROD_MAX_INFLIGHT_MB="8")
    with pytest.raises(SettingsError, match="PROTO2PROD_MAX_ITEMS='0' must be >= 1"):
        config(PROTO2PROD_MAX_ITEMS="0")
    with pytest.raises(SettingsError, match="PROTO2PROD_BODY_TIMEOUT_S='0' must be > 0"):
        config(PROTO2PROD_BODY_TIMEOUT_S="0")
    # Out of range is an error, never quietly raised to the nearest allowed value.
    for key in ("MAX_QUEUE", "MAX_BATCH_SIZE", "MAX_CONCURRENCY", "WORKERS"):
        with pytest.raises(SettingsError, match=f"PROTO2PROD_{key}='0' must be >= 1"):
            config(**{f"PROTO2PROD_{key}": "0"})
    assert config(PROTO2PROD_WORKERS="3").workers == 3
    assert config(PROTO2PROD_POLL_S="120").poll_max_s == 120  # unset: follows a long poll
    with pytest.raises(SettingsError, match="POLL_MAX_S=5 is less than PROTO2PROD_POLL_S=10"):
        config(PROTO2PROD_POLL_MAX_S="5")


def test_each_worker_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The arithmetic, on any machine (CUDA faked below); test_service runs two workers for real."""
    import torch

    from proto2prod.predictor import pick_device

    if torch.cuda.is_available():  # a GPU machine: worker 2 takes its share of the GPUs
        assert pick_device(None, worker=2).type == "cuda"
    else:
        assert pick_device(None, worker=2) == torch.device("cpu")
    assert pick_device("cpu", worker=2) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    devices = [pick_device(None, worker=w) for w in (1, 2, 3, 4)]
    assert [str(d) for d in devices] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert str(pick_device("cuda", worker=2)) == "cuda:1"  # "cuda" alone: spread as well
    assert str(pick_device("cuda:0", worker=2)) == "cuda:0"  # one named device: as asked


class TestMicroBatcher:
    def test_concurrent_submits_share_a_batch_per_key_in_order(self) -> None:
        calls: list[tuple[str, list[int]]] = []

        def run(key: str, items: list[int]) -> list[int]:
            calls.append((key, items))
            return [x * 10 for x in items]

        async def main() -> list[list[int]]:
            batcher = MicroBatcher(run, max_batch_size=8, wait_ms=5)
            jobs = [batcher.submit("a", [1, 2]), batcher.submit("b", [3]), batcher.submit("a", [4])]
            out = await asyncio.gather(*jobs)
            await batcher.close()
            return out

        assert asyncio.run(main()) == [[10, 20], [30], [40]]
        assert calls == [("a", [1, 2, 4]), ("b", [3])]

    def test_batches_respect_the_max_size(self) -> None:
        sizes: list[int] = []

        def run(key: str, items: list[int]) -> list[int]:
            sizes.append(len(items))
            return items

        async def main() -> None:
            batcher = MicroBatcher(run, max_batch_size=4, wait_ms=5)
            await asyncio.gather(*(batcher.submit("k", [i]) for i in range(10)))
            await batcher.close()

        asyncio.run(main())
        assert max(sizes) <= 4 and sum(sizes) == 10

    def test_a_request_over_the_cap_is_split_across_passes_in_order(self) -> None:
        sizes: list[int] = []

        def run(key: str, items: list[int]) -> list[int]:
            sizes.append(len(items))
            return [x * 10 for x in items]

        async def main() -> list[int]:
            batcher = MicroBatcher(run, max_batch_size=4, wait_ms=0, max_queue=10)
            out = await batcher.submit("k", list(range(10)))
            with pytest.raises(Overloaded):  # queued whole or not at all
                await batcher.submit("k", list(range(11)))
            await batcher.close()
            return out

        assert asyncio.run(main()) == [x * 10 for x in range(10)]
        assert sizes == [4, 4, 2]

    def test_overload_and_failures(self) -> None:
        def boom(key: str, items: list[int]) -> list[int]:
            raise RuntimeError("forward failed")

        async def main() -> None:
            batcher = MicroBatcher(boom, max_batch_size=4, wait_ms=0, max_queue=3)
            with pytest.raises(Overloaded):
                await batcher.submit("k", [1, 2, 3, 4])
            with pytest.raises(RuntimeError, match="forward failed"):
                await batcher.submit("k", [1])
            await batcher.close()

        asyncio.run(main())


class _Marker:
    """A pickle payload that would create a file if anything unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.path,))


def test_a_pickle_disguised_as_weights_is_refused_unrun(
    runtime: ModelRuntime, digits: Definition, digits_quick: Trained, tmp_path: Path
) -> None:
    import pickle

    from proto2prod.registry.publish import sha256_file

    marker = tmp_path / "pwned"
    bad = publish(runtime.registry, digits, digits_quick).version
    info = runtime.registry.resolve(f"digits/{bad}")
    model_id = info.source.removeprefix("models:/")
    location = runtime.registry.client.get_logged_model(model_id).artifact_location
    weights = Path(location.removeprefix("file://")) / "artifacts" / "weights.safetensors"
    weights.write_bytes(pickle.dumps(_Marker(marker)))
    # A publisher who also rewrote the recorded digest: the sha256 check alone cannot catch it.
    runtime.registry.client.set_model_version_tag(
        "digits", bad, "proto2prod.sha256.weights.safetensors", sha256_file(weights)
    )
    serving = runtime.current.version  # type: ignore[union-attr]
    runtime.registry.promote("digits", bad, "production")
    assert runtime.check()["swapped"] is False
    assert runtime.current.version == serving  # type: ignore[union-attr]
    assert f"digits/{bad} cannot be loaded" in (runtime.last_swap_error or "")
    assert not marker.exists()


def test_registry_down_and_nothing_cached_is_live_but_not_ready(
    tmp_path: Path, digits: Definition, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.processes import free_port

    settings = Settings.from_env(
        {
            "PROTO2PROD_HOME": str(tmp_path / "home"),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
            "PROTO2PROD_REGISTRY_RETRIES": "0",
        }
    )
    for key, value in settings.mlflow_environment().items():  # as `proto2prod serve` does
        monkeypatch.setenv(key, value)
    rt = ModelRuntime(ServiceSettings(model="digits@production"), digits, Registry(settings))
    rt.start()
    meta = rt.metadata()
    assert not rt.ready and meta["registry_reachable"] is False
    assert "registry unreachable" in meta["not_ready_reason"]
    assert "no cached version of digits@production" in meta["not_ready_reason"]


def test_cuda_asked_for_but_absent_falls_back_to_the_cpu_with_a_warning(
    embedded: Settings, digits: Definition, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from proto2prod.errors import DeviceUnavailable

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the fallback cannot be observed here")
    with caplog.at_level("WARNING", logger="proto2prod.service"):
        rt = ModelRuntime(
            ServiceSettings(model="digits@production", device="cuda"), digits, Registry(embedded)
        )
    assert str(rt.device) == "cpu"
    assert "PROTO2PROD_DEVICE=cuda but CUDA is not available: using the CPU" in caplog.text
    with pytest.raises(DeviceUnavailable, match="PROTO2PROD_REQUIRE_GPU=1 but torch sees no CUDA"):
        required = ServiceSettings(model="digits@production", require_gpu=True)
        ModelRuntime(required, digits, Registry(embedded))


def test_the_poll_interval_doubles_per_failure_up_to_its_bound(
    embedded: Settings, digits: Definition
) -> None:
    config = ServiceSettings(model="digits@production", poll_s=1, poll_max_s=6)
    rt = ModelRuntime(config, digits, Registry(embedded))
    intervals = []
    for failures in range(6):
        rt.failures = failures
        intervals.append(rt.next_poll_in())
    assert intervals == [1, 2, 4, 6, 6, 6]
    rt.failures = 10_000  # a registry down for days: no overflow
    assert rt.next_poll_in() == 6
