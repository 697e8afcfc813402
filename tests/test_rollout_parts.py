"""The rollout parts on their own: webhook signatures, the shadow's comparison, the canary's
judgement, the batcher's idle work, the settings. The real services run them in
tests/test_rollouts.py."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest

from proto2prod import fields
from proto2prod.errors import InvalidRequest, SettingsError, Unauthorized
from proto2prod.service import webhooks
from proto2prod.service.batcher import MicroBatcher
from proto2prod.service.canary import CanaryGuard, Sample
from proto2prod.service.shadow import ShadowStats
from proto2prod.settings import ServiceSettings

SECRET = "a-webhook-secret-of-some-length"


def delivery(
    body: bytes, *, delivery_id: str = "d1", at: float | None = None, secret: str = SECRET
) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {
        webhooks.ID_HEADER: delivery_id,
        webhooks.TIMESTAMP_HEADER: timestamp,
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret, delivery_id, timestamp, body),
    }


def alias_event(name: str = "digits", alias: str = "production", version: str = "2") -> bytes:
    return json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-11-28T00:00:00+00:00",
            "data": {"name": name, "alias": alias, "version": version},
        }
    ).encode()


def test_our_signature_is_mlflows() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = alias_event()
    ours = webhooks.sign(SECRET, "id-1", "1700000000", body)
    assert ours == _generate_hmac_signature(SECRET, "id-1", "1700000000", body.decode())


def test_a_signed_fresh_delivery_is_accepted_and_parsed() -> None:
    body = alias_event(version="7")
    delivery_id = webhooks.verify(delivery(body, delivery_id="abc"), body, SECRET)
    event = webhooks.parse(delivery_id, body)
    assert event == webhooks.AliasEvent(
        "abc", "model_version_alias.created", "digits", "production", "7"
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (lambda b: delivery(b, secret="another-secret-entirely"), "does not match"),
        (lambda b: delivery(b, at=time.time() - 301), "away from this server's clock"),
        (lambda b: delivery(b, at=time.time() + 400), "away from this server's clock"),
        (lambda b: {}, "X-MLflow-Signature are required"),
        (lambda b: {**delivery(b), webhooks.SIGNATURE_HEADER: "v1,AAAA"}, "does not match"),
    ],
    ids=["forged", "stale", "future", "unsigned", "garbage-signature"],
)
def test_forged_stale_and_unsigned_deliveries_are_refused(headers: Any, expected: str) -> None:
    body = alias_event()
    with pytest.raises(Unauthorized, match=expected):
        webhooks.verify(headers(body), body, SECRET)


def test_a_body_changed_after_signing_is_refused() -> None:
    headers = delivery(alias_event(version="2"))
    with pytest.raises(Unauthorized, match="does not match"):
        webhooks.verify(headers, alias_event(version="3"), SECRET)


def test_malformed_event_bodies_are_400_and_other_events_are_ignored() -> None:
    with pytest.raises(InvalidRequest, match="not JSON"):
        webhooks.parse("d", b"{nope")
    with pytest.raises(InvalidRequest, match=r"data\.name and data\.alias"):
        webhooks.parse(
            "d",
            json.dumps(
                {"entity": "model_version_alias", "action": "created", "data": {"name": "digits"}}
            ).encode(),
        )
    other = {"entity": "model_version", "action": "created", "data": {"name": "digits"}}
    assert webhooks.parse("d", json.dumps(other).encode()) is None


def test_a_delivery_id_counts_once_and_memory_is_bounded() -> None:
    seen = webhooks.SeenDeliveries(capacity=3)
    assert seen.first_time("a") and not seen.first_time("a")
    for other in ("b", "c", "d"):
        assert seen.first_time(other)
    assert seen.first_time("a")  # forgotten past capacity (its timestamp ages out anyway)


def test_labels_agree_on_the_top_class_and_differ_by_its_score() -> None:
    compare = fields.Label(classes=["3", "8"]).compare
    champion = {"label": "3", "scores": {"3": 0.9, "8": 0.1}}
    assert compare(champion, {"label": "3", "scores": {"3": 0.7, "8": 0.3}}).agree
    assert compare(champion, {"label": "3", "scores": {"3": 0.7}}).delta == pytest.approx(0.2)
    different = compare(champion, {"label": "8", "scores": {"8": 0.6, "3": 0.4}})
    assert not different.agree and different.delta == pytest.approx(0.5)
    left_out = compare(champion, {"label": "8", "scores": {"8": 0.99}})  # top-1: 3 missing
    assert left_out.delta == pytest.approx(0.9)


def test_numbers_agree_within_one_percent() -> None:
    compare = fields.Number().compare
    assert compare(100.0, 100.5).agree and not compare(100.0, 102.0).agree
    assert compare([1.0, 2.0], [1.0, 2.5]).delta == pytest.approx(0.25)
    assert not compare([1.0, 2.0], [1.0]).agree  # another shape never agrees


def test_shadow_totals() -> None:
    stats = ShadowStats("1", "2", rate=1.0, outputs=fields.Label(classes=["a", "b"]))
    agree = {"label": "a", "scores": {"a": 0.5}}
    differ = {"label": "b", "scores": {"b": 1}}
    stats.add([{"label": "a", "scores": {"a": 1.0}}] * 3, [agree, agree, differ])
    stats.champion_time.add(4, 0.004)
    summary = stats.summary()
    assert summary["compared"] == 3
    assert summary["agreement"] == pytest.approx(2 / 3)
    assert summary["mean_abs_delta"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert summary["champion_ms_per_item"] == pytest.approx(1.0)
    assert summary["challenger_ms_per_item"] is None


def guard(**options: Any) -> CanaryGuard:
    settings = {
        "window": 100,
        "min_requests": 20,
        "min_clients": 3,
        "rng": random.Random(7),
        "secret": b"s" * 32,
        **options,
    }
    return CanaryGuard(10, **settings)


def sample(seconds: float, failed: bool = False, *, client: int = 0, size: int = 10) -> Sample:
    return Sample(seconds, size, f"client-{client % 7}", failed)


def test_the_canary_takes_its_share_and_a_key_always_lands_on_the_same_side() -> None:
    canary = guard()
    taken = sum(canary.takes(None) for _ in range(10_000))
    assert 800 < taken < 1200
    keyed = [f"user-{i}" for i in range(2000)]
    first = [canary.takes(k) for k in keyed]
    assert first == [canary.takes(k) for k in keyed]
    assert 120 < sum(first) < 280
    # the side is a keyed hash: another service's secret puts the same keys elsewhere
    other = [guard(secret=b"t" * 32).takes(k) for k in keyed]
    assert other != first and 120 < sum(other) < 280


def test_a_canary_with_more_errors_is_rolled_back_once_judged() -> None:
    canary = guard()
    for i in range(100):
        assert canary.record(False, sample(0.010, client=i)) is None
    reasons = [canary.record(True, sample(0.010, i % 5 == 0, client=i)) for i in range(19)]
    assert not any(reasons)  # fewer than min_requests: not judged yet
    reasons = [canary.record(True, sample(0.010, i % 5 == 0, client=i)) for i in range(20)]
    rolled = [r for r in reasons if r]
    assert len(rolled) == 1 and "error rate 25.0%" in rolled[0]  # 5 of the first 20
    assert canary.percent == 0 and not canary.takes(None) and not canary.takes("user-1")
    assert canary.summary()["rolled_back"]["reason"] == rolled[0]


def test_a_slower_canary_is_rolled_back_a_similar_one_is_not() -> None:
    similar = guard()
    for i in range(100):
        similar.record(False, sample(0.010 + i % 3 / 1000, client=i))
        assert similar.record(True, sample(0.011 + i % 3 / 1000, client=i)) is None
    assert similar.percent == 10
    slow = guard()
    reasons = []
    for i in range(100):
        slow.record(False, sample(0.010, client=i))
        reasons.append(slow.record(True, sample(0.030, client=i)))
    assert any(r and "p99 30.0 ms per item" in r for r in reasons)


def test_one_client_cannot_roll_the_canary_back() -> None:
    lone = guard()  # every answer from one client: never judged, however bad
    for _ in range(100):
        lone.record(False, Sample(0.010, 10, "me", False))
        assert lone.record(True, Sample(0.500, 10, "me", True)) is None
    assert lone.percent == 10
    # one huge body among small ones is judged against its own size class, where the
    # champion has too few samples: no verdict from it
    big = guard()
    for i in range(99):
        big.record(False, sample(0.010, client=i))
        big.record(True, sample(0.010, client=i))
    assert big.record(True, sample(0.400, client=1, size=20)) is None
    assert big.failing() is None and big.percent == 10


def test_refusals_are_neither_canary_errors_nor_latency_samples() -> None:
    from proto2prod.service.canary import size_class

    assert size_class(1500, 1) == size_class(1900, 1) == 10
    assert size_class(3_000_000, 1) > size_class(3000, 1)
    assert size_class(0, 0) == 0


def test_idle_work_runs_only_when_no_request_waits_and_is_dropped_when_full() -> None:
    async def main() -> list[str]:
        order: list[str] = []

        def run(key: str, items: list[Any]) -> list[Any]:
            order.append(key)
            time.sleep(0.01)
            return items

        batcher: MicroBatcher[str] = MicroBatcher(
            run, max_batch_size=2, wait_ms=0, max_idle_queue=4
        )
        requests = [asyncio.create_task(batcher.submit("champion", [i])) for i in range(4)]
        await asyncio.sleep(0)  # the requests are queued
        idle = batcher.submit_idle("shadow", [1, 2])
        second = batcher.submit_idle("shadow", [3, 4])
        assert batcher.submit_idle("shadow", [5]) is None  # 5 idle items > 4: dropped
        assert await asyncio.gather(*requests) == [[0], [1], [2], [3]]
        assert idle is not None and await idle == [1, 2]
        assert second is not None and await second == [3, 4]
        await batcher.close()
        return order

    assert asyncio.run(main()) == ["champion", "champion", "shadow", "shadow"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PROTO2PROD_CANARY": "challenger"}, "give ALIAS:PERCENT"),
        ({"PROTO2PROD_CANARY": "challenger:0"}, "give ALIAS:PERCENT"),
        ({"PROTO2PROD_CANARY": "challenger:101"}, "give ALIAS:PERCENT"),
        ({"PROTO2PROD_SHADOW": "production"}, "is the alias being served"),
        ({"PROTO2PROD_SHADOW_RATE": "0"}, "must be > 0"),
        ({"PROTO2PROD_SHADOW_RATE": "1.5"}, "0 < rate <= 1"),
        ({"PROTO2PROD_SHADOW": "a", "PROTO2PROD_CANARY": "b:5"}, "not both"),
    ],
)
def test_rollout_settings_that_cannot_work_are_refused(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        ServiceSettings.from_env({"PROTO2PROD_MODEL": "digits@production", **env})


def test_rollout_settings() -> None:
    config = ServiceSettings.from_env(
        {
            "PROTO2PROD_MODEL": "digits@production",
            "PROTO2PROD_CANARY": "challenger:12.5",
        }
    )
    assert (config.canary, config.canary_percent, config.challenger) == (
        "challenger",
        12.5,
        "challenger",
    )
    shadow = ServiceSettings.from_env({"PROTO2PROD_MODEL": "d@p", "PROTO2PROD_SHADOW": "c"})
    assert (shadow.challenger, shadow.shadow_rate, shadow.shadow_log_s) == ("c", 0.1, 60.0)
