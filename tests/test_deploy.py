"""`proto2prod deploy kubernetes`: manifests validated against Kubernetes' own schemas
(`kubernetes-validate`, strict: an unknown field fails), built by `kubectl kustomize`
where kubectl exists, and holding what a fleet needs to swap and drain together.

No cluster is reachable here, so nothing is applied: `kubectl apply --dry-run=client`
itself needs an API server's discovery (tested: it refuses without one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proto2prod.service import kubernetes, peers
from proto2prod.settings import ServiceSettings
from tests.service_process import cli

VERSIONS = ("1.30", kubernetes_validate.latest_version())


def written(tmp_path: Path, *args: str) -> dict[str, dict[str, Any]]:
    out = tmp_path / "k8s"
    done = cli(
        tmp_path / "home",
        "deploy",
        "kubernetes",
        "digits@production",
        "--image",
        "registry.example/digits:1",
        "--out",
        str(out),
        "--tracking-uri",
        "http://mlflow.example:5000",
        "--json",
        *args,
    )
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    return {Path(f).name: yaml.safe_load(Path(f).read_text()) for f in files}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_kubernetes(tmp_path: Path, version: str) -> None:
    found = written(tmp_path, "--replicas", "3", "--gpu")
    kinds = {obj["kind"] for obj in found.values()}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Kustomization",
    }
    for obj in found.values():
        if obj["kind"] != "Kustomization":
            kubernetes_validate.validate(obj, version, strict=True)  # raises on a bad one
    broken = json.loads(json.dumps(found["deployment.yaml"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_fleet_drains_swaps_and_runs_locked_down(tmp_path: Path) -> None:
    found = written(tmp_path, "--replicas", "3", "--gpu")
    deployment, settings = found["deployment.yaml"], found["configmap.yaml"]["data"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["failureThreshold"] * 5 >= 300
    # preStop, the drain and the longest request fit in the grace period
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    budget = (
        pre_stop + float(settings["PROTO2PROD_DRAIN_S"]) + float(settings["PROTO2PROD_TIMEOUT_S"])
    )
    assert pod["terminationGracePeriodSeconds"] > budget
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert settings["PROTO2PROD_DEVICE"] == "cuda"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["runAsNonRoot"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsUser"] == 1034  # the image's user (test_container.py)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {settings["PROTO2PROD_HOME"], "/tmp"} <= mounts  # the only writable places
    # the peers are the headless Service's name, and that name is a valid PROTO2PROD_PEERS
    headless = found["peers-service.yaml"]
    assert headless["spec"]["clusterIP"] == "None"
    assert settings["PROTO2PROD_PEERS"].startswith(f"http://{headless['metadata']['name']}:")
    assert peers.resolve([settings["PROTO2PROD_PEERS"]]) == []  # no such name here: nobody
    env = {**settings, "PROTO2PROD_WEBHOOK_SECRET": "x" * 32}
    assert ServiceSettings.from_env(env).peer_urls == [settings["PROTO2PROD_PEERS"]]
    # secrets are references, never values
    refs = [source.get("secretRef", {}).get("name") for source in container["envFrom"]]
    assert "digits-secrets" in refs
    assert {"name": "keys", "secret": {"secretName": "digits-keys"}} in pod["volumes"]
    text = json.dumps(found)
    assert "PROTO2PROD_WEBHOOK_SECRET" not in text and "ADMIN_TOKEN" not in text
    hpa = found["hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 6)
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    cpu_only = written(tmp_path / "cpu")["deployment.yaml"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(cpu_only)


def test_kubectl_builds_the_kustomization(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here (the schema validation above still ran)")
    written(tmp_path)
    built = subprocess.run(
        [kubectl, "kustomize", str(tmp_path / "k8s")], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    assert len(list(yaml.safe_load_all(built.stdout))) == 6


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    base = ["deploy", "kubernetes", "digits@production", "--image", "i:1", "--out", "k8s"]
    local = cli(tmp_path, *base, MLFLOW_TRACKING_URI="sqlite:///mlflow.db")
    assert local.returncode == 2 and "tracking server" in local.stderr, local.stderr
    none = cli(tmp_path, *base)
    assert none.returncode == 2 and "--tracking-uri" in none.stderr
    uri = ["--tracking-uri", "http://mlflow:5000"]
    fewer = cli(tmp_path, *base, *uri, "--replicas", "3", "--max-replicas", "2")
    assert fewer.returncode == 2 and "--max-replicas 2" in fewer.stderr
    assert not (tmp_path / "k8s").exists()
    assert len(local.stderr.strip().splitlines()) == 1


def test_a_dns_name_is_every_replica_and_localhost_one() -> None:
    assert peers.resolve(["http://localhost:3000"]) == ["http://127.0.0.1:3000"]
    listed = ["http://10.0.0.1:3000", "http://10.0.0.2:3000"]
    assert peers.resolve(listed) == listed
    assert peers.resolve(["http://10.0.0.7:3000"]) == ["http://10.0.0.7:3000"]
    assert kubernetes.Deployment("My_Model@x", "i", "http://m").name == "my-model"
