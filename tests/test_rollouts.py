"""Safe rollouts on real processes: MLflow's signed webhooks swap a service at once, a shadow
is compared but never answers, a canary that does worse rolls itself back.

A real `mlflow server` delivers the webhooks (tests/conftest.py starts it with what delivery
to a loopback receiver needs); each service is a real `proto2prod serve` process.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from proto2prod import Definition, Trained
from proto2prod.registry import Registry
from proto2prod.registry.publish import publish
from proto2prod.service import webhooks
from proto2prod.settings import Settings
from tests.processes import free_port
from tests.service_process import cli, deliver, running_service, sleepy_versions, until

SECRET = "test-webhook-secret-" + uuid.uuid4().hex


def rollout(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/metadata", timeout=10).json()["rollout"]


def signed_post(
    url: str, body: bytes, *, delivery_id: str, at: float | None = None, secret: str = SECRET
) -> httpx.Response:
    return deliver(url, body, secret=secret, delivery_id=delivery_id, at=at)


def test_a_promotion_reaches_the_service_by_webhook_and_forgeries_swap_nothing(
    tmp_path: Path, mlflow_server: str, digits: Definition, digits_quick: Trained
) -> None:
    home = tmp_path / "home"
    registry = Registry(
        Settings.from_env({"PROTO2PROD_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server})
    )
    first = publish(registry, digits, digits_quick, alias="production").version
    second = publish(registry, digits, digits_quick).version
    item = digits.model.examples()[0]
    with running_service(
        home,
        "digits@production",
        tmp_path / "service.log",
        tracking_uri=mlflow_server,
        PROTO2PROD_POLL_S="600",
        PROTO2PROD_POLL_MAX_S="600",
        PROTO2PROD_WEBHOOK_SECRET=SECRET,
    ) as url:
        name = f"test-{uuid.uuid4().hex[:8]}"
        created = cli(
            home,
            "webhook",
            "create",
            name,
            "--url",
            url,
            tracking_uri=mlflow_server,
            PROTO2PROD_WEBHOOK_SECRET=SECRET,
        )
        assert created.returncode == 0, created.stderr
        webhook_id = created.stdout.split()[1]
        assert f"{url}/admin/registry-events" in created.stdout
        try:
            listed = json.loads(
                cli(home, "webhook", "list", "--json", tracking_uri=mlflow_server).stdout
            )
            mine = [hook for hook in listed if hook["id"] == webhook_id]
            assert mine and mine[0]["name"] == name
            assert mine[0]["url"] == f"{url}/admin/registry-events"
            assert set(mine[0]["events"]) == set(webhooks.ALIAS_EVENTS), mine
            time.sleep(1.5)  # the tracking server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1)

            def version() -> str:
                return httpx.post(f"{url}/predict", json={"inputs": [item]}).json()["version"]

            assert version() == first
            promoted = time.monotonic()
            registry.promote("digits", second)
            until(lambda: version() == second, 30, "the promotion to answer")
            took = time.monotonic() - promoted
            assert took < 30  # the poll is 600 s: only the webhook can have done it
            meta = httpx.get(f"{url}/metadata").json()
            assert meta["swaps"] == 1 and meta["version"] == second

            # Forged, stale, malformed and replayed deliveries: refused or ignored.
            body = json.dumps(
                {
                    "entity": "model_version_alias",
                    "action": "created",
                    "data": {"name": "digits", "alias": "production", "version": first},
                }
            ).encode()
            forged = signed_post(url, body, delivery_id="f1", secret="not-the-secret")
            stale = signed_post(url, body, delivery_id="s1", at=time.time() - 600)
            unsigned = httpx.post(f"{url}/admin/registry-events", content=body)
            for refused in (forged, stale, unsigned):
                assert refused.status_code == 401, refused.text
                assert refused.json()["error"] == "Unauthorized"
            malformed = signed_post(
                url,
                b'{"entity": "model_version_alias", "action": "created", "data": []}',
                delivery_id="m1",
            )
            assert malformed.status_code == 400 and "data.name" in malformed.json()["message"]
            # A genuine delivery only makes the service ask the registry, which still says
            # `second`; its replay is ignored.
            checked = httpx.get(f"{url}/metadata").json()["last_registry_check"]
            genuine = signed_post(url, body, delivery_id="g1")
            assert genuine.status_code == 202 and genuine.json()["accepted"] is True
            replay = signed_post(url, body, delivery_id="g1")
            assert replay.status_code == 200 and "seen" in replay.json()["reason"]
            other = signed_post(url, body.replace(b'"production"', b'"staging"'), delivery_id="o1")
            assert other.json()["accepted"] is False and "not followed" in other.json()["reason"]
            until(
                lambda: httpx.get(f"{url}/metadata").json()["last_registry_check"] != checked,
                10,
                "the genuine delivery's registry check",
            )
            meta = httpx.get(f"{url}/metadata").json()
            assert (meta["version"], meta["swaps"]) == (second, 1)
            assert version() == second
        finally:
            deleted = cli(home, "webhook", "delete", webhook_id, tracking_uri=mlflow_server)
            assert deleted.returncode == 0, deleted.stderr
    again = cli(home, "webhook", "delete", webhook_id, tracking_uri=mlflow_server)
    assert again.returncode == 3 and f"no webhook {webhook_id}" in again.stderr


def test_webhook_commands_say_what_they_need(tmp_path: Path, mlflow_server: str) -> None:
    home = tmp_path / "home"
    embedded = cli(home, "webhook", "list")
    assert embedded.returncode == 2 and "MLFLOW_TRACKING_URI" in embedded.stderr
    nobody = f"127.0.0.1:{free_port()}"  # never called: each command stops before
    no_secret = cli(
        home,
        "webhook",
        "create",
        "w",
        "--url",
        f"http://{nobody}",
        tracking_uri=mlflow_server,
        PROTO2PROD_WEBHOOK_SECRET="",
    )
    assert no_secret.returncode == 2 and "PROTO2PROD_WEBHOOK_SECRET" in no_secret.stderr
    bad_url = cli(
        home,
        "webhook",
        "create",
        "w",
        "--url",
        nobody,
        tracking_uri=mlflow_server,
        PROTO2PROD_WEBHOOK_SECRET=SECRET,
    )
    assert bad_url.returncode == 2 and "--url" in bad_url.stderr
    for result in (embedded, no_secret, bad_url):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def noisy(trained: Trained, scale: float) -> Trained:
    """Another version of the same network: the weights with noise, so some answers differ."""
    generator = torch.Generator().manual_seed(3)
    weights = {
        k: v + scale * v.std() * torch.randn(v.shape, generator=generator)
        if v.is_floating_point() and v.numel() > 1
        else v
        for k, v in trained.weights.items()
    }
    return Trained(weights=weights, metrics=dict(trained.metrics))


def test_a_shadow_is_compared_logged_and_never_answers(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    home = tmp_path / "home"
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))
    champion = publish(registry, digits, digits_quick, alias="production").version
    challenger = publish(registry, digits, noisy(digits_quick, 1.0), alias="challenger").version
    from sklearn.datasets import load_digits

    images = [(image * 255 / 16).round().astype(int).tolist() for image in load_digits().images]
    with running_service(
        home,
        "digits@production",
        tmp_path / "service.log",
        PROTO2PROD_SHADOW="challenger",
        PROTO2PROD_SHADOW_RATE="1.0",
        PROTO2PROD_SHADOW_LOG_S="1",
    ) as url:
        until(lambda: rollout(url)["version"] == challenger, 60, "the shadow to load")
        for i in range(30):
            items = images[4 * i : 4 * i + 4]  # 120 different digits
            answer = httpx.post(f"{url}/predict", json={"inputs": items}, timeout=10)
            assert answer.status_code == 200
            assert answer.json()["version"] == champion  # the shadow never answers
        expected = 30 * len(items)
        state = until(
            lambda: (
                (r := rollout(url))["shadow"]["compared"] + 4 * r["shadow"]["dropped"] >= expected
                and r
            ),
            30,
            "the shadow to catch up",
        )
        shadow = state["shadow"]
        assert (shadow["champion"], shadow["challenger"]) == (champion, challenger)
        assert shadow["sampled"] == 30 and shadow["compared"] > 0 and shadow["failed"] == 0
        assert 0 < shadow["agreement"] < 1, shadow  # noisy weights: some answers differ
        assert shadow["mean_abs_delta"] > 0
        assert shadow["champion_ms_per_item"] > 0 and shadow["challenger_ms_per_item"] > 0

        # In MLflow: a run tagged with both versions, its metrics; `compare` prints them.
        def logged() -> dict[str, Any] | None:
            found = cli(home, "compare", "digits", "--json")
            runs = json.loads(found.stdout) if found.returncode == 0 else []
            done = [r for r in runs if r["metrics"].get("shadow_compared") == shadow["compared"]]
            return done[0] if done else None

        run = until(logged, 30, "the comparison in MLflow")
        assert (run["kind"], run["champion"], run["challenger"]) == ("shadow", champion, challenger)
        assert run["metrics"]["shadow_agreement"] == pytest.approx(shadow["agreement"])
        table = cli(home, "compare", "digits", COLUMNS="160")
        assert f"v{champion} vs v{challenger}" in table.stdout and "shadow" in table.stdout

        # A challenger with other fields: refused, the champion serves on.
        other = publish(registry, digits, digits_quick).version
        registry.client.set_model_version_tag(
            "digits", other, "proto2prod.spec", json.dumps({"inputs": {"kind": "text"}})
        )
        registry.promote("digits", other, alias="challenger")
        state = until(lambda: (r := rollout(url))["last_swap_error"] and r, 30, "the refusal")
        assert "fields" in state["last_swap_error"] and state["version"] == challenger
        assert httpx.post(f"{url}/predict", json={"inputs": items}).status_code == 200

        # The challenger promoted: nothing left to compare, the champion answers alone.
        registry.promote("digits", challenger)
        state = until(lambda: (r := rollout(url))["comparing"] is None and r, 30, "the end")
        assert "nothing to compare" in state["note"]


def test_serving_with_a_challenger_that_cannot_work_fails_in_one_line(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    home = tmp_path / "home"
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))
    publish(registry, digits, digits_quick, alias="production")
    other = publish(registry, digits, digits_quick, alias="odd").version
    registry.client.set_model_version_tag(
        "digits", other, "proto2prod.spec", json.dumps({"inputs": {"kind": "text"}})
    )
    cases = [
        (["--shadow", "nosuch"], 3, "has no alias 'nosuch'"),
        (["--canary", "odd:10"], 2, "published with other fields"),
        (["--canary", "odd"], 2, "give ALIAS:PERCENT"),
        (["--shadow", "production"], 2, "is the alias being served"),
        (["--shadow", "odd", "--canary", "odd:5"], 2, "not both"),
    ]
    for options, code, message in cases:
        result = cli(home, "serve", "digits@production", *options)
        assert result.returncode == code and message in result.stderr, (options, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_slower_canary_rolls_itself_back_and_a_promotion_ends_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry, versions = sleepy_versions(home, production=0, challenger=0.05)
    champion, canary = versions["production"], versions["challenger"]
    with running_service(
        home,
        "sleepy@production",
        tmp_path / "service.log",
        PROTO2PROD_CANARY="challenger:30",
        PROTO2PROD_CANARY_MIN_REQUESTS="20",
        PROTO2PROD_CANARY_WINDOW="100",
        PROTO2PROD_CANARY_LOG_S="600",
    ) as url:
        until(lambda: rollout(url)["version"] == canary, 60, "the canary to load")

        def ask(key: str | None = None) -> str:
            headers = {"X-Request-Key": key} if key else {}
            answer = httpx.post(f"{url}/predict", json={"inputs": [0.0]}, headers=headers)
            assert answer.status_code == 200 and answer.json()["outputs"] == [0.0]
            assert answer.headers["X-Model-Version"] == answer.json()["version"]
            return str(answer.json()["version"])

        for key in ("alice", "bob", "carol", "dave"):  # sticky: one version per key
            assert len({ask(key) for _ in range(5)}) == 1
        # many clients (a judgement needs PROTO2PROD_CANARY_MIN_CLIENTS distinct ones)
        answered = [ask(uuid.uuid4().hex) for _ in range(300)]
        assert canary in answered and champion in answered
        state = rollout(url)["canary"]
        assert state["percent"] == 0 and "p99" in state["rolled_back"]["reason"], state
        assert {ask() for _ in range(30)} == {champion}  # rolled back: the champion only
        # the rollback is logged to MLflow at once (the periodic log is 600 s away)
        run = until(
            lambda: next(iter(json.loads(cli(home, "compare", "sleepy", "--json").stdout)), None),
            30,
            "the canary run",
        )
        assert run["kind"] == "canary" and "p99" in (run["rolled_back"] or "")

        registry.promote("sleepy", canary)  # ends the canary the usual way
        until(lambda: ask() == canary, 30, "the promotion")
        assert rollout(url)["comparing"] is None
