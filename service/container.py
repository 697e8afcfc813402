"""`proto2prod build REF --containerize`: the Bento as an OCI image, by BentoML's own
containerize, with Docker where a daemon answers, else podman (which needs none).

The image runs as BentoML's non-root user (uid 1034) and needs only the registry's
location (`MLFLOW_TRACKING_URI`) and its secrets in the environment; the weight cache goes
to a volume (`PROTO2PROD_HOME=/var/cache/proto2prod`, made in the image and owned by that
user, service/bento.py), so the root filesystem may be read-only.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from proto2prod.errors import InvalidArgument, Proto2ProdError
from proto2prod.extras import require

BACKENDS = ("docker", "podman")


class ContainerBuildFailed(Proto2ProdError):
    """The image build failed (the builder's output above says why)."""

    exit_code = 1


def pick_backend(asked: str | None) -> str:
    """`asked`, if its binary is here; else Docker when its daemon answers, else podman."""
    if asked is not None:
        if asked not in BACKENDS:
            raise InvalidArgument(f"--backend {asked}: give one of {', '.join(BACKENDS)}")
        if shutil.which(asked) is None:
            raise InvalidArgument(f"--backend {asked}: no `{asked}` on PATH; install it")
        return asked
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise InvalidArgument(
        "--containerize needs Docker (with its daemon running) or podman: install one "
        "(Debian: apt-get install podman)"
    )


def build_options(pairs: Sequence[str]) -> dict[str, list[str]]:
    """`--build-opt KEY=VALUE` (repeatable) as the builder's options, e.g. network=host,
    volume=/opt/wheels:/opt/wheels:ro (BentoML's `containerize --opt`)."""
    options: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"--build-opt {pair!r}: give KEY=VALUE, e.g. network=host")
        options.setdefault(key.strip().replace("-", "_"), []).append(value)
    return options


def containerize(
    bento: str, *, backend: str, image: str | None = None, options: dict[str, list[str]]
) -> str:
    """Build the OCI image of Bento `bento`; its tag (`image`, default the Bento's tag)."""
    bentoml = require("bentoml")
    tag = image or bento
    bentoml.container.build(bento, backend=backend, image_tag=(tag,), **options)
    if subprocess.run([backend, "image", "inspect", tag], capture_output=True).returncode:
        raise ContainerBuildFailed(
            f"{backend} built no image {tag}; its output above says why (behind a proxy, "
            f"pass --build-opt network=host and mount its CA bundle with --build-opt volume=...)"
        )
    return tag


def image_size(backend: str, tag: str) -> int:
    """The image's size in bytes, as the backend reports it."""
    shown = subprocess.run(
        [backend, "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(shown.stdout.strip())
