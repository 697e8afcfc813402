"""`proto2prod deploy kubernetes`: the manifests that run the service's image as a fleet.

What each object is for, and why it is so:

- **Deployment**: the replicas, rolled one at a time with none unavailable. Readiness is
  `/readyz` (a model loaded and not draining), liveness `/livez`, and a startup probe gives
  the first load its time without a liveness kill. On deletion Kubernetes takes the pod out
  of the Service's endpoints while it sends SIGTERM, so `preStop` waits first, then the
  service's own drain (`PROTO2PROD_DRAIN_S`: `/readyz` 503, still serving) and the longest
  request fit in `terminationGracePeriodSeconds`. Non-root, no privilege escalation, every
  capability dropped, a read-only root filesystem: the weight cache (`PROTO2PROD_HOME`) and
  `/tmp` are volumes.
- **Service**: what clients and the MLflow webhook call (one URL for the whole fleet).
- **Headless Service** (`<name>-peers`): one DNS name with every ready pod's address, which
  is `PROTO2PROD_PEERS`, so a webhook one pod gets reaches all (service/peers.py).
- **HorizontalPodAutoscaler** on CPU, and a **PodDisruptionBudget** so a node drain never
  takes every replica at once.
- **ConfigMap** (`<name>-settings`) for the settings; the API keys, webhook secret and admin
  token are *references* to Secrets the user creates (`<name>-secrets`, `<name>-keys`):
  manifests never hold a secret. Listening on the pod's address needs API keys (the service
  fails closed), so the keys Secret is not optional.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proto2prod.errors import InvalidArgument

PORT = 3000
"""BentoML's port inside the image."""
HOME = "/var/cache/proto2prod"
"""The data dir in the pod: only the weight cache lives there (the registry is remote)."""
KEYS_DIR = "/etc/proto2prod/keys"
PRE_STOP_S = 5
"""Endpoints are removed while SIGTERM is sent: wait this long before the drain begins."""
DRAIN_S = 5.0


@dataclass(frozen=True)
class Deployment:
    """What the manifests are made from (the command's options)."""

    model: str
    """The reference served, e.g. `digits@production`."""
    image: str
    tracking_uri: str
    replicas: int = 2
    max_replicas: int = 0
    """The autoscaler's ceiling; 0: twice `replicas`."""
    gpu: bool = False
    cpu: str = "1"
    memory: str = "2Gi"
    timeout_s: float = 30.0
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A DNS-1035 label from the model's name: what every object is called."""
        base = re.split(r"[@/]", self.model, maxsplit=1)[0]
        label = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")
        if not label or not label[0].isalpha():
            label = f"model-{label}".rstrip("-")
        return label[:50]

    def check(self) -> None:
        if self.replicas < 1:
            raise InvalidArgument(f"--replicas {self.replicas}: give 1 or more")
        if self.max_replicas and self.max_replicas < self.replicas:
            raise InvalidArgument(
                f"--max-replicas {self.max_replicas} is less than --replicas {self.replicas}"
            )
        if not re.match(r"^https?://", self.tracking_uri):
            raise InvalidArgument(
                f"--tracking-uri {self.tracking_uri!r}: pods need a tracking server they can "
                f"reach (http://mlflow.example:5000); a local SQLite store is on this machine only"
            )


def manifests(spec: Deployment) -> dict[str, dict[str, Any]]:
    """File name -> the object it holds."""
    spec.check()
    labels = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/part-of": "proto2prod"}
    return {
        "configmap.yaml": _config_map(spec, labels),
        "deployment.yaml": _deployment(spec, labels),
        "service.yaml": _service(spec, labels, headless=False),
        "peers-service.yaml": _service(spec, labels, headless=True),
        "hpa.yaml": _autoscaler(spec, labels),
        "pdb.yaml": _disruption_budget(spec, labels),
    }


def _meta(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "labels": dict(labels)}  # a copy each: no YAML anchors


def _config_map(spec: Deployment, labels: dict[str, str]) -> dict[str, Any]:
    data = {
        "PROTO2PROD_MODEL": spec.model,
        "MLFLOW_TRACKING_URI": spec.tracking_uri,
        "PROTO2PROD_HOME": HOME,
        "PROTO2PROD_KEYS_FILE": f"{KEYS_DIR}/keys.json",
        "PROTO2PROD_PEERS": f"http://{spec.name}-peers:{PORT}",
        "PROTO2PROD_DRAIN_S": f"{DRAIN_S:g}",
        "PROTO2PROD_TIMEOUT_S": f"{spec.timeout_s:g}",
        **({"PROTO2PROD_DEVICE": "cuda"} if spec.gpu else {}),
        **spec.settings,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(f"{spec.name}-settings", labels),
        "data": data,
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _container(spec: Deployment) -> dict[str, Any]:
    limits: dict[str, str] = {"memory": spec.memory}
    if spec.gpu:
        limits["nvidia.com/gpu"] = "1"
    return {
        "name": "service",
        "image": spec.image,
        "ports": [{"name": "http", "containerPort": PORT}],
        "envFrom": [
            {"configMapRef": {"name": f"{spec.name}-settings"}},
            # PROTO2PROD_WEBHOOK_SECRET, PROTO2PROD_ADMIN_TOKEN
            {"secretRef": {"name": f"{spec.name}-secrets"}},
        ],
        "readinessProbe": _probe("/readyz", 2, 1),
        "livenessProbe": _probe("/livez", 10, 3),
        # the first load (download, verify, warm-up) gets 5 minutes before liveness counts
        "startupProbe": _probe("/livez", 5, 60),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "cache", "mountPath": HOME},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
        ],
    }


def _deployment(spec: Deployment, labels: dict[str, str]) -> dict[str, Any]:
    grace = PRE_STOP_S + DRAIN_S + spec.timeout_s + 10
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": int(grace),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1034,  # BentoML's image user (service/bento.py)
            "runAsGroup": 1034,
            "fsGroup": 1034,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "containers": [_container(spec)],
        "volumes": [
            {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "512Mi"}},
            {"name": "keys", "secret": {"secretName": f"{spec.name}-keys"}},
        ],
    }
    if spec.gpu:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec.name, labels),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": spec.name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }


def _service(spec: Deployment, labels: dict[str, str], *, headless: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"app.kubernetes.io/name": spec.name},
        "ports": [{"name": "http", "port": PORT if headless else 80, "targetPort": "http"}],
    }
    if headless:  # one A record per ready pod: the peers (service/peers.py)
        body["clusterIP"] = "None"
    name = f"{spec.name}-peers" if headless else spec.name
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, labels), "spec": body}


def _autoscaler(spec: Deployment, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(spec.name, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas or 2 * spec.replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def _disruption_budget(spec: Deployment, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec.name, labels),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": spec.name}},
        },
    }


def write(spec: Deployment, out: Path) -> list[Path]:
    """The manifests as YAML files in `out`, and a kustomization listing them
    (`kubectl apply -k OUT`)."""
    import yaml

    objects = manifests(spec)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, obj in objects.items():
        path = out / name
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        written.append(path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(objects),
    }
    (out / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return [*written, out / "kustomization.yaml"]
