"""Guardrails on a real service: API keys with scopes that rotate without a restart, and a
drift check that tells held-out digits (stable) from inverted and rotated ones (retrain)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from proto2prod import Definition, Trained
from proto2prod.errors import Proto2ProdError
from proto2prod.prototype.backends import remote
from tests.service_process import cli, published, running_service, until


def key_of(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_api_keys_guard_predict_and_admin_and_rotate_without_a_restart(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    home = tmp_path / "home"
    published(home, digits, digits_quick)
    web = key_of(cli(home, "keys", "create", "web"))
    ops = key_of(cli(home, "keys", "create", "ops", "--scope", "admin"))
    listed = cli(home, "keys", "list", "--json")
    assert {k["name"]: k["scope"] for k in json.loads(listed.stdout)} == {
        "web": "predict",
        "ops": "admin",
    }
    assert web not in listed.stdout and web not in (home / "keys.json").read_text()
    body = {"inputs": digits.model.examples()[:1]}
    with running_service(home, "digits@production", tmp_path / "service.log") as url:

        def post(key: str | None, path: str = "/predict") -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=10)

        refused = post(None)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in refused.json()["message"]
        assert post(web[:-2] + "xx").status_code == 401
        assert post(web).status_code == 200 and post(ops).status_code == 200
        for open_route in ("/livez", "/readyz", "/metrics"):  # health and metrics stay open
            assert httpx.get(f"{url}{open_route}").status_code == 200, open_route
        assert httpx.get(f"{url}/metadata").status_code == 401
        headers = {"Authorization": f"Bearer {web}"}
        assert httpx.get(f"{url}/metadata", headers=headers).status_code == 200
        forbidden = post(web, "/admin/reload")
        assert forbidden.status_code == 403 and "scope 'predict'" in forbidden.json()["message"]
        assert post(ops, "/admin/reload").status_code == 200

        # The remote prototype sends PROTO2PROD_API_KEY (here given directly).
        backend, spec = remote(url, api_key=web)
        (outcome,) = backend.predict(digits.model.examples()[:1])
        assert outcome.error is None and outcome.output["label"] in spec.outputs.classes  # type: ignore[attr-defined]
        with pytest.raises(Proto2ProdError, match="PROTO2PROD_API_KEY"):
            remote(url)

        # Rotation without a restart: a revoked key stops, a new one starts, within seconds.
        assert cli(home, "keys", "revoke", "web").returncode == 0
        until(lambda: post(web).status_code == 401, 10, "the revoked key to be refused")
        fresh = key_of(cli(home, "keys", "create", "web2"))
        until(lambda: post(fresh).status_code == 200, 10, "the new key to be accepted")
    again = cli(home, "keys", "revoke", "web")
    assert again.returncode == 3 and "no key named 'web'" in again.stderr


def test_serving_beyond_loopback_needs_keys_or_no_auth(
    tmp_path: Path, digits: Definition, digits_quick: Trained
) -> None:
    from proto2prod.cli.serving import _check_exposure

    home = tmp_path / "home"
    published(home, digits, digits_quick)
    refused = cli(home, "serve", "digits@production", "--host", "0.0.0.0")
    assert refused.returncode == 2 and "--no-auth" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    env = {"PROTO2PROD_HOME": str(home)}
    _check_exposure("0.0.0.0", env, no_auth=True)  # told: it may serve open
    _check_exposure("127.0.0.1", env, no_auth=False)  # loopback needs nothing
    key_of(cli(home, "keys", "create", "web"))
    _check_exposure("0.0.0.0", env, no_auth=False)  # a key exists: it will be required


def send(url: str, items: list[Any]) -> None:
    for start in range(0, len(items), 8):
        answer = httpx.post(f"{url}/predict", json={"inputs": items[start : start + 8]})
        assert answer.status_code == 200, answer.text


def test_the_drift_check_says_stable_for_held_out_and_retrain_for_inverted_and_rotated(
    tmp_path: Path, digits: Definition, digits_trained: Trained
) -> None:
    home = tmp_path / "home"
    published(home, digits, digits_trained)  # held-out reference statistics recorded
    held_out = [list(i) for i in digits_trained.reference_inputs or []]
    arrays = [np.array(i) for i in held_out]
    window = len(held_out)
    with running_service(
        home, "digits@production", tmp_path / "service.log", PROTO2PROD_DRIFT_WINDOW=str(window)
    ) as url:

        def report(after_items: int) -> dict[str, Any]:
            def measured() -> dict[str, Any] | None:
                found = httpx.get(f"{url}/metadata").json()["drift"]
                return found if found.get("items", 0) >= after_items else None

            return dict(until(measured, 30, f"{after_items} items measured"))

        def verdicts() -> dict[str, str]:
            table = cli(home, "drift", "digits@production", "--url", url, "--json")
            assert table.returncode == 0, table.stderr
            return {k: v["verdict"] for k, v in json.loads(table.stdout)["statistics"].items()}

        send(url, held_out)
        found = report(window)
        assert found["reference"] == "held-out" and found["reference_count"] == window
        assert set(verdicts().values()) == {"stable"}, found
        shown = cli(home, "drift", "digits@production", "--url", url, COLUMNS="160")
        assert "input.mean_intensity" in shown.stdout and "stable" in shown.stdout
        metrics = httpx.get(f"{url}/metrics").text
        assert "proto2prod_drift_psi{" in metrics and 'statistic="output.label"' in metrics

        send(url, [(255 - a).tolist() for a in arrays])  # inverted: the window is all shifted
        report(2 * window)
        assert verdicts()["input.mean_intensity"] == "retrain"

        send(url, [np.rot90(a).tolist() for a in arrays])  # rotated: the same ink, other digits
        report(3 * window)
        assert verdicts()["output.label"] == "retrain"

        # once per window, the PSI and KS per statistic went to an MLflow run
        logged = json.loads(cli(home, "compare", "digits", "--json", "--all").stdout)
        drift_runs = [r for r in logged if r["kind"] == "drift"]
        assert drift_runs and "psi/input.mean_intensity" in drift_runs[0]["metrics"]
    wrong = cli(home, "drift", "digits@staging", "--url", url)
    assert wrong.returncode == 75  # the service has stopped: retry later
