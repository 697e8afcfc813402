"""proto2prod itself as a wheel, so a Bento's image installs the same proto2prod as here.

proto2prod may come from an index the image cannot reach, or from no index at all (a
wheel built in CI, a clone): the Bento carries it. An installed wheel is packed again from
its own files (RECORD lists them); an editable install is built from its source folder.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from proto2prod.errors import Proto2ProdError

# Files an installer adds to dist-info, which are no part of the wheel.
INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def proto2prod_wheel(folder: Path) -> Path:
    """Write proto2prod's wheel into `folder` and return its path."""
    dist = metadata.distribution("proto2prod")
    source = _editable_source(dist)
    if source is not None:
        return _build_from_source(source, folder)
    return _repack(dist, folder)


def requirements(extras: tuple[str, ...] = ("serve",)) -> list[str]:
    """proto2prod's own requirements with those of `extras`, as pip lines (no markers)."""
    from packaging.requirements import Requirement

    lines = []
    for text in metadata.requires("proto2prod") or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
            req.marker = None
            lines.append(str(req))
    return lines


def _editable_source(dist: metadata.Distribution) -> Path | None:
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    found = json.loads(text)
    if not found.get("dir_info", {}).get("editable"):
        return None
    return Path(unquote(urlparse(found["url"]).path))


SOURCE_JUNK = (
    ".git",
    ".venv",
    "venv",
    "build",
    ".typecheck",
    "dist",
    "*.egg-info",
    ".proto2prod",
    "reports",
    "__pycache__",
    ".*_cache",
    "docs",
    "tests",
)
"""What a wheel build never needs from a source tree (and pip's in-tree build/ can hold
modules deleted since, which would land in the wheel)."""


def _build_from_source(source: Path, folder: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="proto2prod-source-") as tmp:
        clean = Path(tmp) / "proto2prod"
        shutil.copytree(source, clean, ignore=shutil.ignore_patterns(*SOURCE_JUNK))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "-q",
                "-w",
                str(folder),
                str(clean),
            ],
            capture_output=True,
            text=True,
        )
    built = sorted(folder.glob("proto2prod-*.whl"))
    if done.returncode != 0 or not built:
        raise Proto2ProdError(
            f"building proto2prod's wheel from {source} failed: {done.stderr.strip()[-500:]}"
        )
    return built[-1]


def _repack(dist: metadata.Distribution, folder: Path) -> Path:
    """A wheel of the installed files: the package and its dist-info, with a fresh RECORD."""
    info = f"proto2prod-{dist.version}.dist-info"
    names = [
        str(f)
        for f in dist.files or []
        if (f.parts[0] == "proto2prod" and "__pycache__" not in f.parts)
        or (f.parts[0] == info and f.name not in INSTALLER_FILES)
    ]
    if not any(name.startswith("proto2prod/") for name in names):
        raise Proto2ProdError(
            "the installed proto2prod lists no package files (RECORD); reinstall it with pip"
        )
    path = folder / f"proto2prod-{dist.version}-py3-none-any.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name in sorted(names):
            data = Path(str(dist.locate_file(name))).read_bytes()
            wheel.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            writer.writerow([name, f"sha256={digest.decode()}", len(data)])
        writer.writerow([f"{info}/RECORD", "", ""])
        wheel.writestr(f"{info}/RECORD", record.getvalue())
    return path
