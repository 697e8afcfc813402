"""The guardrail parts on their own: the keys file, reference statistics and PSI on real
digits (held out, inverted, rotated). The real service runs them in tests/test_guardrails.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proto2prod import Definition, Trained, statistics
from proto2prod.errors import InvalidArgument, KeyForbidden, ModelNotFound, Unauthorized
from proto2prod.predictor import Predictor
from proto2prod.service import keys as keyfile
from proto2prod.service.keys import KeyStore


def test_a_key_is_shown_once_stored_hashed_and_checked_by_scope(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    assert store.check(None, "predict") is None  # no keys: open
    user = store.create("web", "predict")
    admin = store.create("ops", "admin")
    text = (tmp_path / "keys.json").read_text()
    assert user not in text and user.split("_")[-1] not in text  # only a salted hash
    assert oct(os.stat(tmp_path / "keys.json").st_mode & 0o777) == "0o600"
    time.sleep(keyfile.RECHECK_S)
    assert store.check(f"Bearer {user}", "predict").name == "web"  # type: ignore[union-attr]
    assert store.check(f"Bearer {admin}", "admin").name == "ops"  # type: ignore[union-attr]
    assert store.check(f"Bearer {admin}", "predict") is not None  # admin may predict
    with pytest.raises(KeyForbidden, match="scope 'predict', not 'admin'"):
        store.check(f"Bearer {user}", "admin")
    for bad in (None, user, f"Basic {user}", f"Bearer {user[:-1]}x", "Bearer p2p_00000000_x"):
        with pytest.raises(Unauthorized):
            store.check(bad, "predict")


def test_revoked_keys_stop_working_without_a_restart(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    other = KeyStore(tmp_path / "keys.json")  # the CLI's view of the same file
    key = other.create("web")
    other.create("spare")
    time.sleep(keyfile.RECHECK_S)
    assert store.check(f"Bearer {key}", "predict") is not None
    other.revoke("web")
    time.sleep(keyfile.RECHECK_S)
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


def digits_live(definition: Definition, trained: Trained, items: list[Any]) -> dict[str, Any]:
    """The statistics of `items` through the model, compared with the held-out reference."""
    predictor = Predictor(definition.model, trained.weights, "cpu")
    reference = reference_of(definition, predictor, trained.reference_inputs)
    live = rows(definition, predictor, items)
    return {name: statistics.compare(reference["statistics"][name], values)
            for name, values in statistics.columns_of(live).items()}  # fmt: skip


def rows(definition: Definition, predictor: Predictor, items: list[Any]) -> list[dict[str, Any]]:
    model = definition.model
    tensors = [predictor.prepare(i) for i in items]
    outputs = predictor.run(tensors)
    return [{**statistics.input_values(model.inputs, i, t),
             **statistics.output_values(model.outputs, o)}
            for i, t, o in zip(items, tensors, outputs, strict=True)]  # fmt: skip


def reference_of(definition: Definition, predictor: Predictor, items: Any) -> dict[str, Any]:
    return statistics.reference(statistics.columns_of(rows(definition, predictor, list(items))),
                                source="held-out")  # fmt: skip


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
        "stable", "watch", "watch", "retrain", "retrain"]  # fmt: skip


def test_every_published_version_carries_verified_reference_statistics(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    from dataclasses import replace

    from proto2prod.registry import Registry, fetch, publish
    from proto2prod.settings import Settings

    registry = Registry(Settings.from_env({"PROTO2PROD_HOME": str(tmp_path / "home")}))
    trained = publish(registry, digits, digits_quick).version
    registered = publish(registry, digits, replace(digits_quick, reference_inputs=None),
                         origin={"by": "register"}).version  # fmt: skip
    held_out = fetch(registry, f"digits/{trained}").reference()
    examples = fetch(registry, f"digits/{registered}").reference()
    assert held_out is not None and examples is not None
    assert (held_out["source"], held_out["count"]) == ("held-out", 360)
    assert (examples["source"], examples["count"]) == ("examples", len(digits.model.examples()))
    assert set(held_out["statistics"]) == {"input.mean_intensity", "output.label",
                                           "output.top_score"}  # fmt: skip


def test_a_keys_file_broken_while_serving_keeps_the_last_good_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    key = KeyStore(path).create("web")
    assert store.check(f"Bearer {key}", "predict") is not None
    path.write_text("{half a file")
    time.sleep(keyfile.RECHECK_S)
    assert store.check(f"Bearer {key}", "predict") is not None  # not open, not shut
    with pytest.raises(Unauthorized):
        store.check(None, "predict")
