"""Fetch a version's weights into a per-version local cache, verified by sha256.

Layout: `$PROTO2PROD_HOME/cache/<registry>/<name>/<version>/` with `weights.safetensors`
and `version.json` (what the registry said about it). A download lands in a temporary
folder, is verified, then renamed into place, so a cache entry is whole or absent. Every
`fetch` re-hashes the cached weights before returning them: a file changed on disk is
refused, never loaded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto2prod.errors import CacheUnavailable, IntegrityError
from proto2prod.registry.client import Registry, VersionInfo
from proto2prod.registry.failures import mlflow_error, unreachable
from proto2prod.registry.publish import REFERENCE, WEIGHTS, sha256_file
from proto2prod.registry.reference import ModelRef


@dataclass(frozen=True)
class LocalVersion:
    """A verified version on local disk."""

    path: Path
    info: VersionInfo

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    def reference(self) -> dict[str, Any] | None:
        """The version's reference statistics, verified; None for a version published
        without them (before proto2prod recorded them)."""
        expected = self.info.sha256.get(REFERENCE)
        if not expected:
            return None
        path = self.path / REFERENCE
        verify(path, expected, what=f"{self.info.name}/{self.info.version}")
        document: dict[str, Any] = json.loads(path.read_text())
        return document


def cache_root(registry: Registry) -> Path:
    key = hashlib.sha256(registry.uri.encode()).hexdigest()[:12]
    return registry.settings.cache_dir / key


def fetch(registry: Registry, ref: ModelRef | str | VersionInfo) -> LocalVersion:
    """Resolve `ref`, download its weights once, verify them and return the local copy."""
    info = ref if isinstance(ref, VersionInfo) else registry.resolve(ref)
    expected = info.sha256.get(WEIGHTS)
    if not expected:
        raise IntegrityError(
            f"{info.name}/{info.version} records no sha256 for {WEIGHTS}: it was not published "
            f"by proto2prod, so it cannot be verified; publish it with: proto2prod train FILE.py"
        )
    target = cache_root(registry) / info.name / info.version
    if not target.exists():
        _download(registry, info, target)
    verify(target / WEIGHTS, expected, what=f"{info.name}/{info.version}")
    return LocalVersion(path=target, info=info)


def remember_alias(local: LocalVersion, alias: str) -> None:
    """Record that `alias` resolved to this cached version (for start-ups without registry)."""
    marker = local.path.parent / f"@{alias}"
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")  # one per process: no clash
    with _disk(marker.parent, f"{local.info.name}@{alias}"):
        tmp.write_text(local.info.version)
        tmp.replace(marker)


def cached(registry: Registry, ref: ModelRef | str) -> LocalVersion | None:
    """The cached version `ref` last resolved to, verified, or None if there is none.

    For start-ups while the registry is unreachable: an alias gives the version it pointed
    at when last fetched, a bare name the newest cached version.
    """
    ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
    folder = cache_root(registry) / ref.name
    version = ref.version
    if ref.alias:
        marker = folder / f"@{ref.alias}"
        version = marker.read_text().strip() if marker.is_file() else None
    elif version is None and folder.is_dir():
        numbers = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        version = str(max(numbers)) if numbers else None
    if version is None or not (folder / version / "version.json").is_file():
        return None
    info = VersionInfo(**json.loads((folder / version / "version.json").read_text()))
    verify(folder / version / WEIGHTS, info.sha256.get(WEIGHTS, ""), what=f"{ref.name}/{version}")
    return LocalVersion(path=folder / version, info=info)


def verify(path: Path, expected: str, *, what: str) -> None:
    if not path.is_file():
        raise IntegrityError(f"{what}: {path} is missing; delete {path.parent} to fetch it again")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{what}: {path.name} has sha256 {actual[:16]}..., the registry recorded "
            f"{expected[:16]}...; refusing to load it. If the cached copy was damaged, delete "
            f"{path.parent} to fetch it again"
        )


def _download(registry: Registry, info: VersionInfo, target: Path) -> None:
    import mlflow

    what = f"{info.name}/{info.version}"
    with _disk(target.parent, what):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{info.version}-", dir=target.parent))
    try:
        with registry.errors(f"downloading {what}"):
            location = _artifact_location(registry, info)
            try:
                for name in (WEIGHTS, REFERENCE):
                    if name in info.sha256:
                        mlflow.artifacts.download_artifacts(
                            artifact_uri=f"{location}/artifacts/{name}",
                            dst_path=str(staging),
                            tracking_uri=registry.uri,
                        )
            except (OSError, mlflow_error()) as exc:
                if _disk_problem(exc):
                    raise _cache_unavailable(exc, target.parent, what) from None
                # MLflow folds per-file failures into one message: ask the disk itself,
                # while a partial download still fills it.
                _probe_disk(staging, what)
                if unreachable(exc):
                    raise  # not this version's fault: `errors` says the server is down
                first_line = str(exc).splitlines()[0][:300]
                raise IntegrityError(
                    f"{what}: {WEIGHTS} is missing from the artifact store "
                    f"or unreadable ({first_line}); publish the version again"
                ) from None
        for name, digest in info.sha256.items():
            if name in (WEIGHTS, REFERENCE):
                verify(staging / name, digest, what=what)
        with _disk(target.parent, what):
            (staging / "version.json").write_text(json.dumps(_describe(info), indent=2))
            try:
                staging.rename(target)
            except OSError:
                # Another process (a second worker, another service on this home) put the
                # same version there first: versions never change, so its copy is as good,
                # and the caller verifies it like any cache entry.
                if not (target / WEIGHTS).is_file():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _disk_problem(exc: BaseException) -> bool:
    """An OSError of the local disk, also when MLflow wraps it."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _cache_unavailable(exc: BaseException, folder: Path, what: str) -> CacheUnavailable:
    reason = "disk full" if _errno(exc) in (errno.ENOSPC, errno.EDQUOT) else "not writable"
    return CacheUnavailable(
        f"{what}: the model cache at {folder} is {reason} ({exc.__class__.__name__}: "
        f"{getattr(exc, 'strerror', None) or exc}); free space or fix its permissions, "
        f"it is retried on its own"
    )


def _errno(exc: BaseException) -> int | None:
    while exc is not None:
        if isinstance(exc, OSError):
            return exc.errno
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def _probe_disk(folder: Path, what: str) -> None:
    """Raise CacheUnavailable if 1 MiB cannot be written in `folder` now."""
    probe = folder / ".space-probe"
    try:
        with _disk(folder, what), probe.open("wb") as f:
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    finally:
        probe.unlink(missing_ok=True)


@contextlib.contextmanager
def _disk(folder: Path, what: str) -> Iterator[None]:
    """Writing to the cache: a disk that is full or read-only says so, as CacheUnavailable."""
    try:
        yield
    except OSError as exc:
        raise _cache_unavailable(exc, folder, what) from None


def _artifact_location(registry: Registry, info: VersionInfo) -> str:
    if info.source.startswith("models:/m-"):
        model_id = info.source.removeprefix("models:/")
        return str(registry.client.get_logged_model(model_id).artifact_location)
    return info.source


def _describe(info: VersionInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "run_id": info.run_id,
        "source": info.source,
        "aliases": info.aliases,
        "tags": info.tags,
        "metrics": info.metrics,
        "created_ms": info.created_ms,
        "resolved_from": info.resolved_from,
    }
