"""API keys: who may call the service, and for what. They fail closed.

`proto2prod keys create NAME --scope predict|admin` prints a key once; the keys file
(`PROTO2PROD_KEYS_FILE`, by default `keys.json` in the data directory) keeps only a salted
SHA-256 of it. A key is `p2p_<id>_<secret>`: the id finds its record in one lookup, the
secret (32 random bytes) is what is hashed, so checking a request costs one hash whatever
the number of keys, and the comparison runs in constant time. SHA-256 rather than a slow
password hash because the secret is random and long: there is nothing to guess.

Scopes: `predict` may call `/predict` and `/metadata`; `admin` also the `/admin/*` routes.

**Fail closed.** A service that started with keys, or with `PROTO2PROD_KEYS_FILE` set, is
*closed*, and nothing that happens to the file opens it again: a file emptied of keys (the
last one revoked) refuses every request until a key is created; a missing, unreadable,
non-regular (a directory, a FIFO) or malformed file keeps the last good keys. Each change
is one log line. At start-up, a configured file that is missing, unreadable or malformed
is refused in one line (`SettingsError`). Only a service that started with no keys file at
all is open, and the service itself refuses to listen beyond loopback that way unless told
`PROTO2PROD_NO_AUTH=1` (`service/exposure.py`).

The file is read by a thread of its own (at most once a second, only when its mtime, size
or inode changed), never on the event loop, and only as a regular file opened without
blocking, so a FIFO cannot hang a route. The CLI's writes are read-modify-writes under a
file lock, replaced atomically, onto a symlink's target (the link stays a link).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proto2prod.errors import (
    CacheUnavailable,
    InvalidArgument,
    KeyForbidden,
    ModelNotFound,
    SettingsError,
    Unauthorized,
)

log = logging.getLogger("proto2prod.service")

SCOPES = ("predict", "admin")
PREFIX = "p2p_"
RECHECK_S = 1.0
"""How often, at most, the service looks whether the keys file changed."""
MAX_FILE_BYTES = 4 * 1024 * 1024
"""A keys file larger than this is not one (tens of thousands of keys fit in far less)."""
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class KeyRecord:
    name: str
    id: str
    scope: str
    salt: str
    hash: str
    created: str

    def allows(self, scope: str) -> bool:
        return self.scope == "admin" or self.scope == scope

    def problem(self) -> str | None:
        """What makes this record unusable (a hand edit), or None."""
        if self.scope not in SCOPES:
            return f"key {self.name!r} has scope {self.scope!r}, not one of {', '.join(SCOPES)}"
        if not self.salt or set(self.salt) - _HEX or len(self.salt) % 2:
            return f"key {self.name!r} has a salt that is not hex"
        if len(self.hash) != 64 or set(self.hash) - _HEX:
            return f"key {self.name!r} has a hash that is not 64 hex digits"
        if not self.id:
            return f"key {self.name!r} has no id"
        return None


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


class KeysFileProblem(Exception):
    """The keys file cannot be used as it is (the message says why and how to fix it)."""


def read_keys(path: Path) -> dict[str, KeyRecord] | None:
    """The records in `path`; None when there is no file; `KeysFileProblem` for a file that
    is not a regular, readable, well-formed keys file. Opened without blocking (a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if os.path.islink(path):
            raise KeysFileProblem(f"{path} is a symlink to nothing") from None
        return None
    except OSError as exc:
        raise KeysFileProblem(f"{path} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeysFileProblem(f"{path} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise KeysFileProblem(f"{path} is {info.st_size} bytes, not a keys file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeysFileProblem(f"{path} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    try:
        document = json.loads(raw)
        entries = document["keys"] if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError('no list under "keys"')
        records = [KeyRecord(**entry) for entry in entries]
        for record in records:
            if not all(isinstance(v, str) for v in asdict(record).values()):
                raise ValueError(f"key {record.name!r} has a field that is not a string")
            problem = record.problem()
            if problem:
                raise ValueError(problem)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise KeysFileProblem(
            f"{path} is not a proto2prod keys file ({exc}); fix it, or remove it and create "
            f"the keys again"
        ) from None
    return {r.id: r for r in records}


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """(inode, device, mtime ns, size) of what `path` points to; None when nothing is there."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_dev, info.st_mtime_ns, info.st_size


class KeyStore:
    """The keys file: create, list and revoke (the CLI), check (the service)."""

    def __init__(self, path: Path, *, required: bool = False) -> None:
        self.path = path
        self.required = required
        """`PROTO2PROD_KEYS_FILE` was set: the service is closed from the start."""
        self.closed = False
        """Requests need a key; once True, never False again in this process."""
        self._records: dict[str, KeyRecord] = {}
        self._seen: tuple[int, int, int, int] | None = None
        self._state = ""  # the last state logged, so each change is one line
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    # -- the file, for the CLI ------------------------------------------------------------
    def records(self) -> list[KeyRecord]:
        try:
            return list((read_keys(self.path) or {}).values())
        except KeysFileProblem as exc:
            raise InvalidArgument(str(exc)) from None

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, KeyRecord]]:
        """Read-modify-write under an exclusive lock; written atomically, onto a symlink's
        target, readable by its owner only. Concurrent CLIs never lose each other's change."""
        target = Path(os.path.realpath(self.path))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(f"{target}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    records = read_keys(target) or {}
                except KeysFileProblem as exc:
                    raise InvalidArgument(str(exc)) from None
                yield records
                _write(target, records)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise CacheUnavailable(
                    f"cannot write the keys file {target}: {exc.strerror}; free space (or make "
                    f"it writable) and run the command again"
                ) from None
            raise InvalidArgument(f"cannot write the keys file {target}: {exc.strerror}") from None

    def create(self, name: str, scope: str = "predict") -> str:
        """A new key named `name`; returns the key itself (shown once, never stored)."""
        if scope not in SCOPES:
            raise InvalidArgument(f"--scope {scope!r}: choose {' or '.join(SCOPES)}")
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(f"key name {name!r}: use letters, digits, '-' and '_'")
        key_id, secret, salt = (
            secrets.token_hex(4),
            secrets.token_urlsafe(32),
            secrets.token_hex(16),
        )
        with self._editing() as records:
            if any(r.name == name for r in records.values()):
                raise InvalidArgument(
                    f"a key named {name!r} exists; revoke it first (proto2prod keys revoke {name})"
                )
            records[key_id] = KeyRecord(
                name=name,
                id=key_id,
                scope=scope,
                salt=salt,
                hash=_digest(salt, secret),
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
        return f"{PREFIX}{key_id}_{secret}"

    def revoke(self, name: str) -> None:
        with self._editing() as records:
            gone = [k for k, r in records.items() if r.name == name]
            if not gone:
                raise ModelNotFound(f"no key named {name!r}; list them with: proto2prod keys list")
            for key_id in gone:
                del records[key_id]

    # -- the service ----------------------------------------------------------------------
    def start(self, *, watch: bool = True) -> None:
        """Read the file once and decide open or closed; then (`watch`) follow it in a thread.

        `SettingsError` for a configured file that is missing, unusable, and for an
        existing default file that is unusable: the service refuses to start that way.
        """
        try:
            found = read_keys(self.path)
        except KeysFileProblem as exc:
            raise SettingsError(f"API keys: {exc}") from None
        if found is None and self.required:
            raise SettingsError(
                f"PROTO2PROD_KEYS_FILE={self.path} does not exist: create a key (proto2prod "
                f"keys create NAME), or unset PROTO2PROD_KEYS_FILE"
            )
        self._seen = _signature(self.path)
        self._records = found or {}
        self.closed = bool(found) or self.required
        self._state = self._describe()
        log.info("API keys: %s", self._state)
        if watch and self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name="proto2prod-keys", daemon=True
            )
            self._watcher.start()

    def _describe(self) -> str:
        if not self.closed:
            return f"none ({self.path} does not exist): open, on loopback only"
        if not self._records:
            return f"{self.path} holds no key: every request is refused until one is created"
        return f"{len(self._records)} from {self.path}; requests need one"

    def _watch(self) -> None:
        while True:
            time.sleep(RECHECK_S)
            try:
                self.refresh()
            except Exception:  # never let the watcher die: the last good keys stay
                log.exception("API keys: checking %s failed; the last good keys stay", self.path)

    def refresh(self) -> None:
        """Re-read the file if it changed (the watcher calls this once a second)."""
        seen = _signature(self.path)
        if seen == self._seen and seen is not None:
            return
        with self._lock:
            self._seen = seen
            try:
                found = read_keys(self.path)
            except KeysFileProblem as exc:
                self._say(f"{exc}; still checking the {len(self._records)} keys read before")
                return
            if found is None:
                if self.closed:
                    self._say(
                        f"{self.path} is gone; still checking the {len(self._records)} keys read "
                        f"before (the service never opens by itself)"
                    )
                return
            self._records = found
            self.closed = self.closed or bool(found)
            self._say(self._describe(), problem=not found)

    def _say(self, state: str, *, problem: bool = True) -> None:
        """One log line per change of state, not one per check."""
        if state != self._state:
            self._state = state
            log.log(logging.WARNING if problem else logging.INFO, "API keys: %s", state)

    @property
    def enabled(self) -> bool:
        return self.closed

    def check(self, authorization: str | None, scope: str) -> KeyRecord | None:
        """The key record the `Authorization` header carries, if it allows `scope`.

        None when the service is open (started without keys); `Unauthorized` (401) without
        a valid key, `KeyForbidden` (403) for a key without the scope. In memory only.
        """
        if not self.closed:
            return None
        records = self._records
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(PREFIX):
            raise Unauthorized("send Authorization: Bearer <API key> (proto2prod keys create)")
        key_id, _, secret = token[len(PREFIX) :].partition("_")
        record = records.get(key_id)
        # hash and compare even for an unknown id: the answer's timing says nothing
        expected = record.hash if record else "0" * 64
        given = _digest(record.salt if record else "00", secret)
        if not hmac.compare_digest(given, expected) or record is None:
            raise Unauthorized("the API key is not valid (revoked, or mistyped)")
        if not record.allows(scope):
            raise KeyForbidden(f"the key {record.name!r} has scope {record.scope!r}, not {scope!r}")
        return record


def _write(target: Path, records: dict[str, KeyRecord]) -> None:
    """Atomically, readable by its owner only (the caller holds the lock)."""
    document = {"keys": [asdict(r) for r in records.values()]}
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary(record: KeyRecord) -> dict[str, Any]:
    """What `keys list` shows: never the hash or the salt."""
    return {"name": record.name, "id": record.id, "scope": record.scope, "created": record.created}
