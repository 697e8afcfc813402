"""One host's lock on moving an alias: MLflow has no compare-and-set for aliases."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from proto2prod.errors import RegistryError


def registry_identity(uri: str) -> str:
    """One name per registry, however its URI is spelled: a SQLite file by its resolved
    path (`.../mlflow.db`, `..././mlflow.db` and a symlink to it are one file), a server by
    its normalised URL (scheme and host in lower case, the default port dropped, no
    trailing slash)."""
    import os
    from urllib.parse import urlsplit

    if uri.startswith("sqlite:///"):
        return "sqlite:" + os.path.realpath(uri[len("sqlite:///") - 1 :].split("?")[0])
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.hostname:
        default = {"http": 80, "https": 443}[parts.scheme]
        port = f":{parts.port}" if parts.port and parts.port != default else ""
        path = parts.path.rstrip("/")
        return f"{parts.scheme}://{parts.hostname.lower()}{port}{path}"
    if parts.scheme in ("", "file"):
        return "file:" + os.path.realpath(parts.path or uri)
    return uri


@contextlib.contextmanager
def alias_lock(uri: str, name: str, alias: str, timeout_s: float = 60) -> Iterator[None]:
    """This host's exclusive lock on moving `name@alias` in the registry at `uri`.

    MLflow has no compare-and-set: this serialises every process on one host (the usual
    case: a CI runner, an operator's machine). Moves racing from two hosts are caught later
    (rollback skips a recorded move that did not happen).
    """
    import fcntl
    import hashlib
    import tempfile
    from pathlib import Path

    key = hashlib.sha256(f"{registry_identity(uri)}|{name}|{alias}".encode()).hexdigest()[:20]
    folder = Path(tempfile.gettempdir()) / "proto2prod-locks"
    folder.mkdir(exist_ok=True)
    with (folder / f"{key}.lock").open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"another move of {name}@{alias} has held its lock for {timeout_s:.0f} s; "
                        f"retry when it is done"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
