"""API keys: who may call the service, and for what.

`proto2prod keys create NAME --scope predict|admin` prints a key once; the keys file
(`PROTO2PROD_KEYS_FILE`, by default `keys.json` in the data directory) keeps only a salted
SHA-256 of it. A key is `p2p_<id>_<secret>`: the id finds its record in one lookup, the
secret (32 random bytes) is what is hashed, so checking a request costs one hash whatever
the number of keys, and the comparison runs in constant time. SHA-256 rather than a slow
password hash because the secret is random and long: there is nothing to guess.

Scopes: `predict` may call `/predict` and `/metadata`; `admin` also the `/admin/*` routes.
The service re-reads the file when it changes (checked at most once a second), so keys are
created and revoked without a restart. A file with no keys means the service is open: the
CLI refuses to bind beyond loopback that way unless told `--no-auth`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proto2prod.errors import InvalidArgument, KeyForbidden, ModelNotFound, Unauthorized

log = logging.getLogger("proto2prod.service")

SCOPES = ("predict", "admin")
PREFIX = "p2p_"
RECHECK_S = 1.0
"""How often, at most, the service looks whether the keys file changed."""


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


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


class KeyStore:
    """The keys file: create, list and revoke (the CLI), check (the service)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, KeyRecord] = {}
        self._seen: tuple[float, int] | None = None  # (mtime, size) of what was read
        self._checked = 0.0
        self._lock = threading.Lock()

    # -- the file -------------------------------------------------------------------------
    def _read(self) -> dict[str, KeyRecord]:
        try:
            document = json.loads(self.path.read_text())
            records = [KeyRecord(**entry) for entry in document.get("keys", [])]
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidArgument(
                f"the keys file {self.path} is not a proto2prod keys file ({exc}); fix it or "
                f"remove it and create the keys again"
            ) from None
        return {r.id: r for r in records}

    def _write(self, records: dict[str, KeyRecord]) -> None:
        """Atomically, readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"keys": [asdict(r) for r in records.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(document, out, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def records(self) -> list[KeyRecord]:
        return list(self._read().values())

    def create(self, name: str, scope: str = "predict") -> str:
        """A new key named `name`; returns the key itself (shown once, never stored)."""
        if scope not in SCOPES:
            raise InvalidArgument(f"--scope {scope!r}: choose {' or '.join(SCOPES)}")
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(f"key name {name!r}: use letters, digits, '-' and '_'")
        records = self._read()
        if any(r.name == name for r in records.values()):
            raise InvalidArgument(
                f"a key named {name!r} exists; revoke it first (proto2prod keys revoke {name})"
            )
        key_id, secret, salt = (
            secrets.token_hex(4),
            secrets.token_urlsafe(32),
            secrets.token_hex(16),
        )
        records[key_id] = KeyRecord(
            name=name, id=key_id, scope=scope, salt=salt, hash=_digest(salt, secret),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )  # fmt: skip
        self._write(records)
        return f"{PREFIX}{key_id}_{secret}"

    def revoke(self, name: str) -> None:
        records = self._read()
        kept = {k: r for k, r in records.items() if r.name != name}
        if len(kept) == len(records):
            raise ModelNotFound(f"no key named {name!r}; list them with: proto2prod keys list")
        self._write(kept)

    # -- the service ----------------------------------------------------------------------
    def current(self) -> dict[str, KeyRecord]:
        """The keys as the file says now (re-read when it changed; checked once a second)."""
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return self._records
        with self._lock:
            self._checked = now
            try:
                stat = self.path.stat()
                seen: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
            except FileNotFoundError:
                seen = None
            if seen != self._seen:
                try:
                    self._records = self._read() if seen else {}
                except InvalidArgument as exc:  # keep the last good keys: fail neither open
                    log.error("%s; still checking the keys read before", exc)  # nor shut
                self._seen = seen
        return self._records

    @property
    def enabled(self) -> bool:
        return bool(self.current())

    def check(self, authorization: str | None, scope: str) -> KeyRecord | None:
        """The key record the `Authorization` header carries, if it allows `scope`.

        None when no keys are configured (the service is open); `Unauthorized` (401)
        without a valid key, `KeyForbidden` (403) for a key without the scope.
        """
        records = self.current()
        if not records:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme != "Bearer" or not token.startswith(PREFIX):
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


def summary(record: KeyRecord) -> dict[str, Any]:
    """What `keys list` shows: never the hash or the salt."""
    return {"name": record.name, "id": record.id, "scope": record.scope, "created": record.created}
