"""The guardrail parts on their own: the keys file, reference statistics and PSI on real
digits (held out, inverted, rotated). The real service runs them in tests/test_guardrails.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proto2prod import Definition, Trained, statistics
from proto2prod.errors import (
    InvalidArgument,
    KeyForbidden,
    ModelNotFound,
    SettingsError,
    Unauthorized,
)
from proto2prod.predictor import Predictor
from proto2prod.service.keys import KeyStore


def serving(path: Path, **options: Any) -> KeyStore:
    """The service's view of a keys file: started, refreshed by hand (no watcher thread)."""
    store = KeyStore(path, **options)
    store.start(watch=False)
    return store


def test_a_key_is_shown_once_stored_hashed_and_checked_by_scope(tmp_path: Path) -> None:
    assert serving(tmp_path / "keys.json").check(None, "predict") is None  # no file: open
    cli = KeyStore(tmp_path / "keys.json")
    user = cli.create("web", "predict")
    admin = cli.create("ops", "admin")
    text = (tmp_path / "keys.json").read_text()
    assert user not in text and user.split("_")[-1] not in text  # only a salted hash
    assert oct(os.stat(tmp_path / "keys.json").st_mode & 0o777) == "0o600"
    store = serving(tmp_path / "keys.json")
    assert store.check(f"Bearer {user}", "predict").name == "web"  # type: ignore[union-attr]
    assert store.check(f"bearer {user}", "predict") is not None  # RFC 7235: any case
    assert store.check(f"Bearer {admin}", "admin").name == "ops"  # type: ignore[union-attr]
    assert store.check(f"Bearer {admin}", "predict") is not None  # admin may predict
    with pytest.raises(KeyForbidden, match="scope 'predict', not 'admin'"):
        store.check(f"Bearer {user}", "admin")
    for bad in (None, user, f"Basic {user}", f"Bearer {user[:-1]}x", "Bearer p2p_00000000_x"):
        with pytest.raises(Unauthorized):
            store.check(bad, "predict")


def test_revoked_keys_stop_working_without_a_restart(tmp_path: Path) -> None:
    other = KeyStore(tmp_path / "keys.json")  # the CLI's view of the same file
    key = other.create("web")
    other.create("spare")
    store = serving(tmp_path / "keys.json")
    assert store.check(f"Bearer {key}", "predict") is not None
    other.revoke("web")
    store.refresh()
    with pytest.raises(Unauthorized, match="not valid"):
        store.check(f"Bearer {key}", "predict")
    with pytest.raises(ModelNotFound, match="no key named 'web'"):
        other.revoke("web")


def test_bad_key_names_scopes_and_files_are_clear(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    with pytest.raises(InvalidArgument, match="--scope 'root'"):
        store.create("x", "root")
    with pytest.raises(InvalidArgument, match="key name"):
        store.create("a b")
    store.create("x")
    with pytest.raises(InvalidArgument, match="exists"):
        store.create("x")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidArgument, match="not a proto2prod keys file"):
        KeyStore(tmp_path / "broken.json").records()


def _break(path: Path, how: str, good: str) -> None:
    """Do to the keys file at `path` what an attacker or an accident would."""
    path.unlink()
    if how == "garbage":
        path.write_text("{half a file")
    elif how == "deleted":
        pass
    elif how == "dangling symlink":
        path.symlink_to(path.with_name("nowhere.json"))
    elif how == "directory":
        path.mkdir()
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "symlink loop":
        path.symlink_to(path)
    elif how == "non-hex salt":
        document = json.loads(good)
        document["keys"][0]["salt"] = "zz" * 16
        path.write_text(json.dumps(document))
    elif how == "not a list":
        path.write_text('{"keys": {}}')


@pytest.mark.parametrize(
    "how",
    [
        "garbage",
        "deleted",
        "dangling symlink",
        "directory",
        "fifo",
        "symlink loop",
        "non-hex salt",
        "not a list",
    ],
)
def test_a_service_with_keys_never_opens_whatever_happens_to_the_file(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "keys.json"
    key = KeyStore(path).create("web")
    store = serving(path)
    good = path.read_text()
    _break(path, how, good)
    store.refresh()  # returns at once even for a FIFO (opened without blocking)
    with pytest.raises(Unauthorized):
        store.check(None, "predict")  # not open
    assert store.check(f"Bearer {key}", "predict") is not None  # the last good keys stay
    if how in ("deleted", "garbage"):  # and a good file again is read again
        path.unlink(missing_ok=True)
        fresh = KeyStore(path).create("new")
        store.refresh()
        assert store.check(f"Bearer {fresh}", "predict") is not None
        with pytest.raises(Unauthorized):
            store.check(f"Bearer {key}", "predict")


def test_revoking_the_last_key_refuses_everyone_instead_of_opening(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = KeyStore(path).create("web")
    store = serving(path)
    KeyStore(path).revoke("web")
    store.refresh()
    assert json.loads(path.read_text()) == {"keys": []}
    for header in (None, f"Bearer {key}"):
        with pytest.raises(Unauthorized):
            store.check(header, "predict")
    assert store.enabled


@pytest.mark.parametrize(
    "how", ["garbage", "directory", "fifo", "non-hex salt", "dangling symlink"]
)
def test_an_unusable_keys_file_at_start_up_is_refused_in_one_line(tmp_path: Path, how: str) -> None:
    path = tmp_path / "keys.json"
    KeyStore(path).create("web")
    _break(path, how, path.read_text())
    with pytest.raises(SettingsError, match="API keys: ") as refused:
        KeyStore(path).start(watch=False)
    assert "\n" not in str(refused.value)


def test_a_configured_keys_file_must_exist_and_then_is_closed_even_empty(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(SettingsError, match="does not exist"):
        KeyStore(path, required=True).start(watch=False)
    path.write_text('{"keys": []}')
    store = serving(path, required=True)
    with pytest.raises(Unauthorized):
        store.check(None, "predict")


def _create_many(path: str, prefix: str, count: int) -> None:
    store = KeyStore(Path(path))
    for i in range(count):
        store.create(f"{prefix}-{i}")
        if i % 2:
            store.revoke(f"{prefix}-{i}")


def test_concurrent_creates_and_revokes_from_processes_lose_nothing(tmp_path: Path) -> None:
    import multiprocessing

    target = tmp_path / "real" / "keys.json"
    target.parent.mkdir()
    target.write_text('{"keys": []}')
    link = tmp_path / "keys.json"
    link.symlink_to(target)  # the keys file as a symlink: it must stay one
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_create_many, args=(str(link), p, 30)) for p in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    names = sorted(r.name for r in KeyStore(link).records())
    assert names == sorted(f"{p}-{i}" for p in "ab" for i in range(0, 30, 2))
    assert link.is_symlink() and os.path.realpath(link) == str(target)


def digits_live(definition: Definition, trained: Trained, items: list[Any]) -> dict[str, Any]:
    """The statistics of `items` through the model, compared with the held-out reference."""
    predictor = Predictor(definition.model, trained.weights, "cpu")
    reference = reference_of(definition, predictor, trained.reference_inputs)
    live = rows(definition, predictor, items)
    return {
        name: statistics.compare(reference["statistics"][name], values)
        for name, values in statistics.columns_of(live).items()
    }


def rows(definition: Definition, predictor: Predictor, items: list[Any]) -> list[dict[str, Any]]:
    model = definition.model
    tensors = [predictor.prepare(i) for i in items]
    outputs = predictor.run(tensors)
    return [
        {
            **statistics.input_values(model.inputs, i, t),
            **statistics.output_values(model.outputs, o),
        }
        for i, t, o in zip(items, tensors, outputs, strict=True)
    ]


def reference_of(definition: Definition, predictor: Predictor, items: Any) -> dict[str, Any]:
    return statistics.reference(
        statistics.columns_of(rows(definition, predictor, list(items))), source="held-out"
    )


def test_digits_held_out_is_stable_inverted_and_rotated_are_retrain(
    digits: Definition, digits_trained: Trained
) -> None:
    held_out = list(digits_trained.reference_inputs or [])
    assert len(held_out) > 300
    same = digits_live(digits, digits_trained, held_out)
    assert {v["verdict"] for v in same.values()} == {"stable"}, same
    arrays = [np.array(i) for i in held_out]
    inverted = digits_live(digits, digits_trained, [(255 - a).tolist() for a in arrays])
    rotated = digits_live(digits, digits_trained, [np.rot90(a).tolist() for a in arrays])
    assert inverted["input.mean_intensity"]["verdict"] == "retrain", inverted
    assert rotated["output.label"]["verdict"] == "retrain", rotated
    for shifted in (inverted, rotated):
        assert max(v["psi"] for v in shifted.values()) >= statistics.WATCH
    assert same["input.mean_intensity"]["ks_p"] > 0.5
    assert inverted["input.mean_intensity"]["ks_p"] < 1e-6


def test_reference_statistics_by_field_kind() -> None:
    numeric = statistics.reference({"input.x": [float(i) for i in range(100)]}, source="s")
    x = numeric["statistics"]["input.x"]
    assert x["kind"] == "numeric" and len(x["edges"]) == 9
    assert x["shares"] == pytest.approx([0.1] * 10)
    labels = statistics.reference({"output.label": ["a"] * 3 + ["b"]}, source="s")
    assert labels["statistics"]["output.label"]["shares"] == {"a": 0.75, "b": 0.25}
    same = statistics.compare(x, [float(i) for i in range(100)])
    shifted = statistics.compare(x, [float(i) + 50 for i in range(100)])
    assert same["psi"] == pytest.approx(0) and same["verdict"] == "stable"
    assert shifted["verdict"] == "retrain"
    assert json.dumps(numeric)  # the artifact is plain JSON
    assert [statistics.verdict(p) for p in (0.05, 0.1, 0.2, 0.25, 1)] == [
        "stable",
        "watch",
        "watch",
        "retrain",
        "retrain",
    ]


def test_every_published_version_carries_verified_reference_statistics(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    from dataclasses import replace

    from proto2prod.registry import Registry, fetch, publish
    from proto2prod.settings import Settings

    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(tmp_path / "home")}))
    trained = publish(registry, digits, digits_quick).version
    registered = publish(
        registry, digits, replace(digits_quick, reference_inputs=None), origin={"by": "register"}
    ).version
    held_out = fetch(registry, f"digits/{trained}").reference()
    examples = fetch(registry, f"digits/{registered}").reference()
    assert held_out is not None and examples is not None
    assert (held_out["source"], held_out["count"]) == ("held-out", 360)
    assert (examples["source"], examples["count"]) == ("examples", len(digits.model.examples()))
    assert set(held_out["statistics"]) == {
        "input.mean_intensity",
        "output.label",
        "output.top_score",
    }
