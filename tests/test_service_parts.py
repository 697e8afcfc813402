"""The service's parts without BentoML: the request path (`Answering`), the registry
follower and drift, built from `Parts` as a worker builds them, run in this process.
tests/test_service.py runs the same parts behind a real `bentoml serve`."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from proto2prod import Definition, Settings, Trained
from proto2prod.registry import Registry, publish
from proto2prod.service.http import Answer
from proto2prod.service.keys import KeyStore
from proto2prod.service.parts import Parts
from proto2prod.service.predict import RequestInfo
from proto2prod.settings import ServiceSettings

with warnings.catch_warnings():  # service/metrics.py declares its metrics through
    # bentoml.metrics (a service's processes are BentoML's, which sets up their multiprocess
    # folder); imported in a test process, BentoML only warns that the module is deprecated
    warnings.filterwarnings("ignore", "bentoml.metrics module", DeprecationWarning)
    from proto2prod.service.serving import Serving


def serving(embedded: Settings, digits: Definition, **config: Any) -> Serving:
    settings = ServiceSettings(model="digits@production", **config)
    keys = KeyStore(embedded.keys_file)
    parts = Parts(embedded, settings, Registry(embedded), keys, in_worker=True, definition=digits)
    return Serving(parts, worker=1)


def test_a_request_takes_the_typed_path_from_the_version_to_the_answer(
    embedded: Settings, digits: Definition, digits_quick: Trained
) -> None:
    version = publish(Registry(embedded), digits, digits_quick, alias="production").version
    worker = serving(embedded, digits, max_items=4)
    item = digits.model.examples()[2]

    async def ask(inputs: list[Any], small: bool = True) -> Answer:
        deadline = asyncio.get_running_loop().time() + 30
        return await worker.answering.answer(inputs, deadline, RequestInfo(small=small))

    async def scenario() -> list[Answer]:
        not_yet = await ask([item])  # before the first load: 503, never an exception
        worker.runtime.start()
        answers = [not_yet, await ask([item, item]), await ask([item], small=False)]
        answers += [await ask([item, {"bad": 1}]), await ask([]), await ask([item] * 5)]
        await worker.stop()
        return answers

    not_yet, two, large, bad, empty, many = asyncio.run(scenario())
    assert not_yet.status == 503 and not_yet.body["error"] == "NotReady"
    assert two.status == 200 and two.headers == {"X-Model-Version": version}
    assert [o["label"] for o in two.body["outputs"]] == ["7", "7"]
    assert large.status == 200 and large.body["outputs"] == two.body["outputs"][:1]
    assert bad.status == 422 and bad.body["index"] == 1, bad.body
    assert empty.status == 422 and "the list is empty" in empty.body["message"]
    assert many.status == 413 and "PROTO2PROD_MAX_ITEMS" in many.body["message"]
    assert worker.drift.tracker is not None and worker.drift.tracker.version == version
    assert worker.drift_report()["enabled"] is True


def test_the_follower_owns_the_aliases_and_the_runtime_its_failures(
    embedded: Settings, digits: Definition, digits_quick: Trained
) -> None:
    publish(Registry(embedded), digits, digits_quick, alias="production")
    worker = serving(embedded, digits, drift=False)
    assert list(worker.runtimes()) == ["production"]
    worker.runtime.failed("a registry check", RuntimeError("boom"))
    meta = worker.runtime.metadata()
    assert meta["registry_failures"] == 1 and meta["registry_error"] == "RuntimeError: boom"
    assert meta["not_ready_reason"] == "a registry check failed: RuntimeError: boom"
    assert worker.drift_report() == {"enabled": False, "note": "off (PROTO2PROD_DRIFT=0)"}
    worker.following.checks.close()


def test_a_canary_rollback_another_worker_judged_is_acted_on_here(
    embedded: Settings, digits: Definition, digits_quick: Trained
) -> None:
    """The fan-out's receiving end, deterministic: the real-process test of two workers
    (tests/test_fail_closed.py) may see both judge the canary before either hears the other."""
    registry = Registry(embedded)
    champion = publish(registry, digits, digits_quick, alias="production").version
    canary = publish(registry, digits, digits_quick, alias="challenger").version
    worker = serving(embedded, digits, canary="challenger", canary_percent=30.0, drift=False)
    assert worker.rollout is not None

    async def scenario() -> dict[str, Any]:
        worker.runtime.start()
        worker.rollout.runtime.start()  # type: ignore[union-attr]
        item = digits.model.examples()[0]
        deadline = asyncio.get_running_loop().time() + 30
        await worker.answering.answer([item], deadline, RequestInfo(small=True))  # the pair
        event = {"kind": "canary-rollback", "pair": [champion, canary], "reason": "p99 x3"}
        await worker.following.on_event({**event, "worker": 2})
        found = worker.rollout.metadata()  # type: ignore[union-attr]
        await worker.stop()
        return found

    found = asyncio.run(scenario())
    assert found["canary"]["percent"] == 0, found
    assert found["canary"]["rolled_back"]["reason"] == "p99 x3 (judged by worker 2)"
