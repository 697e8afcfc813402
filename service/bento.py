"""`proto2prod build`: a Bento of the service for a user's own model definition.

A Bento is BentoML's deployable unit (then `bentoml containerize` makes an OCI image for
Kubernetes or BentoCloud). This one holds the definition file (and any local modules it
imports, given with `--include`), proto2prod itself as a wheel, and the reference to serve
as its default; the weights stay in the registry, fetched and verified at start-up.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from proto2prod.definition import load_definition
from proto2prod.errors import DefinitionError
from proto2prod.extras import require
from proto2prod.registry.reference import ModelRef
from proto2prod.service.distribution import proto2prod_wheel, requirements

SERVICE = "proto2prod.service.app:ModelService"
CACHE = "/var/cache/proto2prod"
"""In the image: where the weight cache goes, owned by BentoML's non-root user (uid 1034);
mount a volume there and set PROTO2PROD_HOME to it (the root filesystem can be read-only)."""
SETUP_SCRIPT = f"""#!/bin/sh
set -e
mkdir -p {CACHE}
chown 1034:1034 {CACHE}
# BentoML makes these under BENTOML_HOME at every start: made now, a read-only root is fine
mkdir -p /home/bentoml/bentos /home/bentoml/models /home/bentoml/envs /home/bentoml/tmp
"""


@dataclass(frozen=True)
class Built:
    tag: str
    path: Path
    """The Bento's folder in the store (`BENTOML_HOME`)."""
    files: list[str]
    """The files from the build context, relative to the Bento's `src/`."""


def build_bento(
    ref: ModelRef,
    definition: Path,
    *,
    include: tuple[str, ...] = (),
    version: str | None = None,
    base_image: str | None = None,
) -> Built:
    """Build and store a Bento serving `ref` with the definition in `definition`;
    `base_image` is its image's base (BentoML's own Debian image by default)."""
    bentoml = require("bentoml")
    if not definition.is_file():
        raise DefinitionError(f"--definition {definition}: no such file")
    model = load_definition(definition).model  # checked: a bad definition fails here
    if model.name != ref.name:
        raise DefinitionError(
            f"{definition} defines model '{model.name}', not '{ref.name}'; pass the "
            f"definition of '{ref.name}'"
        )
    folder = definition.resolve().parent
    # bentoml.bentos.build types `envs` with this class and exports it nowhere public.
    from bentoml._internal.bento.build_config import BentoEnvSchema

    envs = {
        "PROTO2PROD_MODEL": str(ref),
        "PROTO2PROD_DEFINITION": definition.name,
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
    }
    with tempfile.TemporaryDirectory(prefix="proto2prod-bento-") as tmp:
        # A context of exactly what the Bento holds: the user's folder is read, never written.
        context = Path(tmp)
        for name in [definition.name, *_matches(folder, include)]:
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, context / name)
        (context / "wheels").mkdir()
        setup = context / "setup.sh"  # as root, while the image is built
        setup.write_text(SETUP_SCRIPT)
        setup.chmod(0o755)
        wheel = proto2prod_wheel(context / "wheels")
        # BentoML resolves `wheels` and `setup_script` against the working directory and
        # refuses files outside it, whatever `build_ctx` says.
        with contextlib.chdir(context):
            bento = bentoml.bentos.build(
                SERVICE,
                name=bento_name(ref.name),
                description=f"proto2prod service for {ref} ({model.title})",
                labels={"proto2prod.model": str(ref), "proto2prod.definition": definition.name},
                envs=[BentoEnvSchema(name=k, value=v) for k, v in envs.items()],
                # Restored by BentoML wherever it loads the Bento (service/app.py reads them).
                args={"model": str(ref), "definition": definition.name},
                python={
                    "packages": [*requirements(), f"./wheels/{wheel.name}"],
                    # also in env/python/wheels/, where the image's install looks for the line
                    "wheels": [f"wheels/{wheel.name}"],
                    "lock_packages": False,
                },
                docker={"base_image": base_image, "setup_script": "setup.sh"},
                build_ctx=str(context),
                version=version,
            )
    src = Path(bento.path_of("src"))
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    return Built(tag=str(bento.tag), path=Path(bento.path), files=files)


def _matches(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    """Files under `folder` matching each glob pattern, relative; a pattern matching nothing
    is an error (a module the definition imports would be missing from the image)."""
    found: list[str] = []
    for pattern in patterns:
        hits = [p for p in sorted(folder.glob(pattern)) if p.is_file()]
        hits = [p for p in hits if "__pycache__" not in p.parts]
        if not hits:
            raise DefinitionError(f"--include {pattern!r} matches no file in {folder}")
        found += [str(p.relative_to(folder)) for p in hits]
    return found


def bento_name(model_name: str) -> str:
    """A Bento name from a registry name: lower case letters, digits, '-' and '_'."""
    return re.sub(r"[^a-z0-9_-]+", "-", model_name.lower()).strip("-_") or "model"
