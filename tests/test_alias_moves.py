"""Alias moves that are atomic in effect, on the embedded SQLite store: concurrent promotes
serialised, SQLite's lock ridden out or failed cleanly, and a rollback that never reports a
move it did not make."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from proto2prod import Definition, Settings, Trained
from proto2prod.registry import Registry, publish
from proto2prod.registry.client import history_tag
from tests.conftest import BIN


@pytest.fixture
def five(tmp_path: Path, digits: Definition, digits_quick: Trained) -> Registry:
    """digits versions 1-5 in a fresh embedded registry, @production at 1."""
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(tmp_path / "home")}))
    publish(registry, digits, digits_quick, alias="production")
    for _ in range(4):
        publish(registry, digits, digits_quick)
    return registry


def cli(registry: Registry, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PROTO2PROD_HOME": str(registry.settings.home), "PATH": "/usr/bin:/bin", **env}
    return subprocess.run(
        [str(BIN / "proto2prod"), *args], capture_output=True, text=True, env=environ, timeout=120
    )


def test_concurrent_promotes_are_serialised_and_each_is_recorded(five: Registry) -> None:
    promotes = [
        subprocess.Popen(
            [str(BIN / "proto2prod"), "promote", "digits", str(v)],
            env={"PROTO2PROD_HOME": str(five.settings.home), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in (2, 3, 4, 5)
    ]
    for p in promotes:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    moves = json.loads(five.client.get_registered_model("digits").tags[history_tag("production")])
    assert len(moves) == 4 and {m["to"] for m in moves} == {"2", "3", "4", "5"}
    assert moves[0]["from"] == "1"
    assert all(a["to"] == b["from"] for a, b in zip(moves, moves[1:], strict=False))  # a chain
    visited = [five.rollback("digits")[1] for _ in range(4)]  # back through every move
    assert visited == [m["from"] for m in reversed(moves)] and visited[-1] == "1"


def test_two_spellings_of_one_registry_share_one_alias_lock(five: Registry) -> None:
    """The lock is the registry's, not its URI's: `.../mlflow.db` and `..././mlflow.db`."""
    from proto2prod.registry.locks import registry_identity

    home = five.settings.home
    spellings = [
        f"sqlite:///{home}/mlflow.db",
        f"sqlite:///{home}/./mlflow.db",
        f"sqlite:///{home}/../{home.name}/mlflow.db",
        f"sqlite:///{home}//mlflow.db",
    ]
    assert len({registry_identity(u) for u in spellings}) == 1
    assert registry_identity("HTTP://Tracking:80/") == registry_identity("http://tracking")
    assert registry_identity("http://tracking:5000") != registry_identity("http://tracking")
    promotes = [
        subprocess.Popen(
            [str(BIN / "proto2prod"), "promote", "digits", str(v)],
            env={"PROTO2PROD_HOME": str(home), "MLFLOW_TRACKING_URI": uri, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v, uri in zip((2, 3, 4, 5), spellings, strict=True)
    ]
    for p in promotes:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    moves = json.loads(five.client.get_registered_model("digits").tags[history_tag("production")])
    assert len(moves) == 4 and {m["to"] for m in moves} == {"2", "3", "4", "5"}, moves
    assert all(a["to"] == b["from"] for a, b in zip(moves, moves[1:], strict=False))


def hold_sqlite_lock(db: Path, seconds: float) -> threading.Thread:
    """Another writer: holds SQLite's write lock on the registry for `seconds`."""
    started = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(db, timeout=30)
        connection.execute("BEGIN IMMEDIATE")
        started.set()
        time.sleep(seconds)
        connection.rollback()
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    started.wait(10)
    return thread


def test_a_short_lock_is_ridden_out_and_a_long_one_fails_cleanly(five: Registry) -> None:
    db = five.settings.home / "mlflow.db"
    holder = hold_sqlite_lock(db, 1.5)
    done = cli(five, "promote", "digits", "2")
    holder.join()
    assert done.returncode == 0, done.stderr
    assert five.resolve("digits@production").version == "2"

    # MLflow itself waits 20 s for SQLite's lock (busy_timeout); past that and our own
    # retries (PROTO2PROD_REGISTRY_TIMEOUT_S), the promote fails having written nothing.
    holder = hold_sqlite_lock(db, 25)
    done = cli(five, "promote", "digits", "3", PROTO2PROD_REGISTRY_TIMEOUT_S="2")
    holder.join()
    assert done.returncode == 75, done.stderr  # EX_TEMPFAIL: retry, the input was fine
    assert len(done.stderr.strip().splitlines()) == 1 and "retry" in done.stderr
    assert "Traceback" not in done.stderr
    assert five.resolve("digits@production").version == "2"  # nothing moved
    assert five.alias_history("digits", "production") == ["1"]  # nothing recorded
    assert five.rollback("digits") == ("2", "1")


def test_rollback_skips_a_recorded_move_that_did_not_happen(five: Registry) -> None:
    five.promote("digits", 2)
    # What a promote that failed after recording (before this fix) left behind: 2 -> 3.
    phantom = [{"from": "1", "to": "2"}, {"from": "2", "to": "3"}]
    five.client.set_registered_model_tag("digits", history_tag("production"), json.dumps(phantom))
    assert five.rollback("digits") == ("2", "1")
    assert five.resolve("digits@production").version == "1"
    with pytest.raises(Exception, match="no earlier version recorded"):
        five.rollback("digits")


def test_two_first_trains_of_a_new_model_both_register(tmp_path: Path) -> None:
    from tests.conftest import EXAMPLES

    env = {"PROTO2PROD_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    # The registry exists (two processes creating a new SQLite store race in MLflow's own
    # schema set-up); the model does not: both trains are its first.
    Registry(
        Settings.from_env({"PROTO2PROD_HOME": str(tmp_path / "home")})
    ).client.search_experiments()
    trains = [
        subprocess.Popen(
            [str(BIN / "proto2prod"), "train", str(EXAMPLES / "tabular.py"), "--quick"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in trains:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(tmp_path / "home")}))
    versions = registry.versions("wine")
    assert sorted(v.version for v in versions) == ["1", "2"]
    runs = registry.client.search_runs(
        [registry.client.get_experiment_by_name("proto2prod/wine").experiment_id]
    )
    assert sorted(r.info.run_id for r in runs) == sorted(v.run_id for v in versions)  # no orphan
