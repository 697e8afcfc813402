"""A fleet on one machine, on real processes: 3 replicas of `proto2prod serve` behind a real
HAProxy (Debian's), MLflow's webhook posted once to the balancer by a real `mlflow server`.

A promotion reaches every replica through the one that got the webhook (PROTO2PROD_PEERS;
the poll is 600 s, so nothing else can have done it), no request through the balancer
fails during promotions or a replica's restart (its drain; the benchmark restarts every
replica in turn), and a canary rollback judged on one replica
reaches the others by the fan-out and a replica without peers by the registry.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from proto2prod import Definition, Settings, Trained
from proto2prod.benchmarks import fleet
from proto2prod.registry import Registry, publish
from proto2prod.registry.rollouts import ROLLED_BACK
from proto2prod.service import peers
from tests.conftest import BIN
from tests.service_process import (
    cli,
    environment,
    running_service,
    sleepy_versions,
    until,
)

SECRET = "fleet-webhook-secret-" + uuid.uuid4().hex


def served(replica: fleet.Replica, item: Any) -> str:
    answer = httpx.post(f"{replica.url}/predict", json={"inputs": [item]}, timeout=10)
    return answer.headers.get("X-Model-Version", "")


def test_a_promotion_reaches_every_replica_and_no_request_fails_through_the_balancer(
    tmp_path: Path, mlflow_server: str, digits: Definition, digits_quick: Trained
) -> None:
    home = tmp_path / "home"
    registry = Registry(
        Settings.from_env({"PROTO2PROD_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server})
    )
    first = publish(registry, digits, digits_quick, alias="production").version
    second = publish(registry, digits, digits_quick).version
    item = digits.model.examples()[0]
    env = environment(
        home,
        mlflow_server,
        PROTO2PROD_POLL_S="600",
        PROTO2PROD_POLL_MAX_S="600",
        PROTO2PROD_WEBHOOK_SECRET=SECRET,
        PROTO2PROD_REGISTRY_TIMEOUT_S="10",
    )
    with fleet.fleet("digits@production", 3, tmp_path / "fleet", env) as running:
        created = cli(
            home,
            "webhook",
            "create",
            f"fleet-{uuid.uuid4().hex[:8]}",
            "--url",
            running.url,  # one URL: the balancer's, as MLflow's one POST per delivery
            tracking_uri=mlflow_server,
            PROTO2PROD_WEBHOOK_SECRET=SECRET,
        )
        assert created.returncode == 0, created.stderr
        webhook_id = created.stdout.split()[1]
        time.sleep(1.5)  # the tracking server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1)
        try:
            with fleet.steady_load(running.url, [item]) as seen:
                took = []
                for turn in range(4):
                    target = second if turn % 2 == 0 else first
                    promoted = time.monotonic()
                    registry.promote("digits", target)
                    until(
                        lambda t=target: all(served(r, item) == t for r in running.replicas),
                        30,  # the poll is 600 s: only the webhook and the fan-out can do it
                        f"every replica to answer v{target}",
                    )
                    took.append(time.monotonic() - promoted)
                print(f"promote -> all 3 answering: {[round(t, 2) for t in took]} s")
                print(f"median {statistics.median(took):.2f} s")
                # the webhook reached one replica, which told both others (each its own check)
                metas = [httpx.get(f"{r.url}/metadata").json() for r in running.replicas]
                fanouts = [m["peers"]["last_fanout"] for m in metas if m["peers"]["last_fanout"]]
                assert fanouts, metas
                for fanout in fanouts:
                    assert fanout["kind"] == "check" and fanout["alias"] == "production", fanout
                    assert Counter(fanout["peers"].values())["202"] >= 2, fanout
                running.restart_one(running.replicas[0])  # the benchmark restarts them all
                print(f"restart, SIGTERM to ready: {running.restarts[0]:.1f} s")
                time.sleep(0.5)
            assert seen["200"] > 100, seen
            assert set(seen) <= {"200", f"v{first}", f"v{second}"}, f"failed requests: {seen}"
        finally:
            cli(home, "webhook", "delete", webhook_id, tracking_uri=mlflow_server)


def test_peer_events_are_signed_fresh_and_never_replayed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sleepy_versions(home, production=0)
    told = peers.Peers(["http://127.0.0.1:9"], SECRET, origin="someone-else")
    with running_service(
        home,
        "sleepy@production",
        tmp_path / "service.log",
        PROTO2PROD_WEBHOOK_SECRET=SECRET,
        PROTO2PROD_PEERS="http://127.0.0.1:9",
    ) as url:

        def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
            return httpx.post(f"{url}{peers.PATH}", content=body, headers=headers, timeout=10)

        body, headers = told.signed("check", {"alias": "production", "name": "sleepy"})
        assert post(body, headers).status_code == 202
        replay = post(body, headers)
        assert replay.status_code == 200 and replay.json()["accepted"] is False
        forged_by = peers.Peers([], "another-secret-of-16-chars", origin="x")
        forged = post(*forged_by.signed("check", {"alias": "production", "name": "sleepy"}))
        assert forged.status_code == 401, forged.text
        stale_body, stale = told.signed("check", {"alias": "production"})
        stale["x-mlflow-timestamp"] = str(int(time.time()) - 600)
        assert post(stale_body, stale).status_code == 401
        assert post(body, {}).status_code == 401  # unsigned: refused before the body is read
        bad_body, bad = told.signed("serve-version-9", {})
        refused = post(bad_body, bad)
        assert refused.status_code == 400 and "kind" in refused.json()["message"], refused.text
        own = peers.Peers([], SECRET, origin=httpx.get(f"{url}/metadata").json()["peers"]["origin"])
        mine = post(*own.signed("check", {"alias": "production", "name": "sleepy"}))
        assert mine.json()["accepted"] is False  # a replica drops its own events
    assert (
        "PROTO2PROD_WEBHOOK_SECRET"
        in cli(home, "serve", "sleepy@production", PROTO2PROD_PEERS="http://127.0.0.1:9").stderr
    )
    malformed = cli(home, "serve", "sleepy@production", PROTO2PROD_PEERS="replica-1:3000")
    assert malformed.returncode == 2 and "not a base URL" in malformed.stderr


def test_a_canary_rolled_back_on_one_replica_is_rolled_back_on_all(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry, versions = sleepy_versions(home, production=0, challenger=0.05)
    champion, canary = versions["production"], versions["challenger"]
    env = environment(
        home,
        PROTO2PROD_CANARY="challenger:30",
        PROTO2PROD_CANARY_MIN_REQUESTS="20",
        PROTO2PROD_CANARY_WINDOW="100",
        PROTO2PROD_CANARY_LOG_S="600",
        PROTO2PROD_POLL_S="1",
        PROTO2PROD_WEBHOOK_SECRET=SECRET,
    )

    def rollout(url: str) -> dict[str, Any]:
        return dict(httpx.get(f"{url}/metadata", timeout=10).json()["rollout"])

    with fleet.fleet("sleepy@production", 2, tmp_path / "fleet", env) as running:
        judge, other = running.replicas
        for replica in running.replicas:
            until(lambda r=replica: rollout(r.url)["version"] == canary, 60, "the canary")
        for _ in range(300):  # only `judge` sees traffic: only it can judge
            key = {"X-Request-Key": uuid.uuid4().hex}
            httpx.post(f"{judge.url}/predict", json={"inputs": [0.0]}, headers=key, timeout=10)
        judged = rollout(judge.url)["canary"]
        assert judged["percent"] == 0 and "p99" in judged["rolled_back"]["reason"], judged
        told = until(lambda: rollout(other.url)["canary"]["rolled_back"], 10, "the fan-out")
        assert "replica" in told["reason"] and rollout(other.url)["canary"]["percent"] == 0
        recorded = until(
            lambda: registry.resolve(f"sleepy/{canary}").tags.get(ROLLED_BACK), 30, "the record"
        )
        assert json.loads(recorded)["champion"] == champion
    # a replica that was not told (no peers, started later) reads it from the registry
    with running_service(
        home,
        "sleepy@production",
        tmp_path / "late.log",
        PROTO2PROD_CANARY="challenger:30",
        PROTO2PROD_POLL_S="1",
    ) as late:
        until(lambda: rollout(late)["version"] == canary, 60, "the late replica's canary")
        state = until(lambda: rollout(late)["canary"]["rolled_back"], 10, "the recorded rollback")
        assert "recorded in the registry" in state["reason"]
        answers = {
            httpx.post(f"{late}/predict", json={"inputs": [0.0]}).json()["version"]
            for _ in range(20)
        }
        assert answers == {champion}


def test_the_fleet_scenario_measures_replicas_promotions_and_a_rolling_restart(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [str(BIN / "proto2prod"), "bench", "--quick", "--models", "digits", "--out", str(out)]
        + ["--architectures", "service", "--scenarios", "fleet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads((out / "results.json").read_text())["scenarios"]["fleet"][0]
    assert [r["replicas"] for r in found["rows"]] == [1, 2]  # a quick run: 1 and 2
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in found["rows"]), found["rows"]
    assert all(r["cpu_ms_per_request"] > 0 for r in found["rows"])
    peers, alone = found["peers"], found["alone"]
    assert len(peers["seconds"]) == len(alone["seconds"]) == 3
    assert peers["max_s"] < 30  # the poll is 60 s: each promotion reached all by the fan-out
    assert peers["failed"] == alone["failed"] == found["rolling_restart"]["failed"] == 0, found
    assert found["rolling_restart"]["requests"] > 0
    text = (out / "report.md").read_text()
    assert "## A fleet behind HAProxy" in text and "with PROTO2PROD_PEERS every one of 2" in text
