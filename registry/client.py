"""The MLflow model registry, as proto2prod uses it: versions, aliases, resolving references.

Aliases, never the deprecated stages. Promote moves an alias and records where it pointed
before (a registered-model tag), so rollback can move it back, and appends the move with
its time to a second tag, the alias's log: MLflow keeps no history of aliases.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proto2prod.errors import ModelNotFound, RegistryBusy, RegistryError, RegistryUnavailable
from proto2prod.registry.failures import NOT_FOUND_CODES, mlflow_error, sqlite_busy, unreachable
from proto2prod.registry.locks import alias_lock
from proto2prod.registry.reference import ModelRef, check_alias
from proto2prod.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

TAG = "proto2prod"
HISTORY_KEEP = 50
LOG_KEEP = 30  # a tag value holds a few kB; 30 moves of ~90 characters fit


def _aliases_of(aliases: dict[str, Any]) -> dict[str, list[str]]:
    """{alias: version} as {version: [alias, ...]}."""
    out: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        out.setdefault(str(version), []).append(alias)
    return out


def history_tag(alias: str) -> str:
    return f"{TAG}.alias.{alias}.history"


def log_tag(alias: str) -> str:
    return f"{TAG}.alias.{alias}.log"


def _moves(tags: dict[str, str], alias: str) -> list[dict[str, str | None]]:
    """The recorded moves of `alias`, oldest first: `{"from": v, "to": w}`. A history written
    before moves were recorded whole is a list of versions (their targets unknown: None)."""
    recorded = json.loads(tags.get(history_tag(alias), "[]"))
    return [m if isinstance(m, dict) else {"from": str(m), "to": None} for m in recorded]


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, as the CLI lists it and `resolve` returns it."""

    name: str
    version: str
    run_id: str
    source: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_ms: int = 0
    resolved_from: str | None = None
    """The reference this was resolved from, e.g. `digits@production`."""

    @property
    def sha256(self) -> dict[str, str]:
        """Recorded sha256 of each artifact, keyed by file name."""
        prefix = f"{TAG}.sha256."
        return {k[len(prefix) :]: v for k, v in self.tags.items() if k.startswith(prefix)}

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.tags.get(f"{TAG}.spec", "{}"))

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: a metric MLflow holds as NaN or infinite is null (JSON has neither)."""
        metrics = {k: v if math.isfinite(v) else None for k, v in self.metrics.items()}
        return {
            "version": self.version,
            "aliases": self.aliases,
            "metrics": metrics,
            "run_id": self.run_id,
        }


class Registry:
    """A connection to the tracking server (or the embedded SQLite store) of `settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uri = self.settings.effective_tracking_uri
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> MlflowClient:
        # The client takes its URIs explicitly: MLflow's global URI (and the
        # MLFLOW_TRACKING_URI that `mlflow.set_tracking_uri` writes) stay the caller's.
        from mlflow import MlflowClient

        if self.settings.embedded:
            self.settings.home.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    @contextlib.contextmanager
    def fluent(self) -> Iterator[None]:
        """MLflow's fluent API (runs, `log_model`) pointed at this registry for the block.

        Those calls read MLflow's global tracking URI, and `mlflow.set_tracking_uri` also
        writes `MLFLOW_TRACKING_URI` into the environment, where every child process would
        inherit it. Both are put back exactly as they were afterwards (MLflow's own
        `_use_tracking_uri` unsets a variable the caller had set); through MLflow's public
        `get_tracking_uri`/`set_tracking_uri` only. Not thread-safe: publish
        runs in a CLI or a notebook, never on a server's request path.
        """
        import mlflow

        before_global = mlflow.get_tracking_uri()  # what the caller's fluent calls resolve to
        before_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before_global)
            if before_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before_env

    @contextlib.contextmanager
    def errors(self, what: str, *, not_found: str | None = None) -> Iterator[None]:
        """Translate MLflow's exceptions into proto2prod's, naming `what` was asked: the one
        place that knows how MLflow says "unreachable" and "does not exist". `not_found` is
        the message (with what to do) for a thing that does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            if unreachable(exc):
                raise RegistryUnavailable(
                    f"cannot reach the MLflow tracking server at {self.uri} ({what}); "
                    f"start it or point MLFLOW_TRACKING_URI at a running one"
                ) from None
            first_line = str(exc).splitlines()[0]
            if exc.error_code in NOT_FOUND_CODES:
                raise ModelNotFound(not_found or f"{what}: {first_line} in {self.uri}") from None
            raise RegistryError(f"{what}: {first_line}") from exc

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Drop MLflow's warning that our pyfunc's `list[Any]` input is not validated.

        It is by design (proto2prod's fields validate), MLflow re-enables it with its own
        `catch_warnings` on every log and load, so a warnings filter cannot reach it.
        """
        original = warnings.showwarning

        def show(message: Any, *args: Any, **kwargs: Any) -> None:
            if "Any type hint is inferred as AnyType" not in str(message):
                original(message, *args, **kwargs)

        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = original

    # -- reading --------------------------------------------------------------------------
    def _model(self, name: str) -> Any:
        """The registered model (its aliases and tags): one read, shared by an operation."""
        with self.errors(
            f"looking up model '{name}'",
            not_found=f"no model named '{name}' in the registry at {self.uri}; "
            f"register one with: proto2prod train FILE.py",
        ):
            return self.client.get_registered_model(name)

    def resolve(self, ref: ModelRef | str, *, with_metrics: bool = True) -> VersionInfo:
        """The concrete version a reference points to now (`with_metrics=False` skips the
        run lookup: a service polling the alias needs only the version). Two reads: the
        model (with its aliases), then the version."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        model = self._model(ref.name)
        aliases = model.aliases or {}
        if ref.alias:
            if ref.alias not in aliases:
                raise ModelNotFound(
                    f"model '{ref.name}' has no alias '{ref.alias}'; set it with: "
                    f"proto2prod promote {ref.name} VERSION --alias {ref.alias}"
                )
            version = str(aliases[ref.alias])
        elif ref.version:
            version = ref.version
        else:
            with self.errors(f"resolving {ref}"):
                found = self.client.search_model_versions(
                    f"name='{ref.name}'", order_by=["version_number DESC"], max_results=1
                )
            if not found:
                raise ModelNotFound(f"model '{ref.name}' has no versions")
            version = str(found[0].version)
        with self.errors(
            f"resolving {ref}",
            not_found=f"model '{ref.name}' has no version {version}; list them with: "
            f"proto2prod versions {ref.name}",
        ):
            mv = self.client.get_model_version(ref.name, version)
        return self._info(
            mv,
            resolved_from=str(ref),
            with_metrics=with_metrics,
            aliases=_aliases_of(aliases).get(version, []),
        )

    def versions(self, name: str, *, with_metrics: bool = True) -> list[VersionInfo]:
        """All versions of `name`, newest first."""
        # search_model_versions leaves `aliases` empty: take them from the model.
        aliases = _aliases_of(self._model(name).aliases or {})
        with self.errors(f"listing versions of '{name}'"):
            found = self.client.search_model_versions(
                f"name='{name}'", order_by=["version_number DESC"]
            )
            return [
                self._info(mv, with_metrics=with_metrics, aliases=aliases.get(str(mv.version)))
                for mv in found
            ]

    def _info(
        self,
        mv: Any,
        *,
        resolved_from: str | None = None,
        with_metrics: bool = True,
        aliases: list[str] | None = None,
    ) -> VersionInfo:
        metrics: dict[str, float] = {}
        if with_metrics and mv.run_id:
            metrics = dict(self.client.get_run(mv.run_id).data.metrics)
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or "",
            source=mv.source,
            aliases=sorted(aliases if aliases is not None else (mv.aliases or [])),
            tags=dict(mv.tags or {}),
            metrics=metrics,
            created_ms=int(mv.creation_timestamp or 0),
            resolved_from=resolved_from,
        )

    def alias_history(self, name: str, alias: str) -> list[str]:
        """Versions the alias pointed at before, oldest first (what rollback goes back to)."""
        return [str(move["from"]) for move in _moves(self._model(name).tags or {}, alias)]

    def alias_log(self, name: str, alias: str) -> list[dict[str, str | None]]:
        """Every move of the alias, oldest first: `{"at", "action", "from", "to"}`."""
        return list(json.loads((self._model(name).tags or {}).get(log_tag(alias), "[]")))

    # -- writing --------------------------------------------------------------------------
    def promote(self, name: str, version: str | int, alias: str = "production") -> str | None:
        """Point `alias` at `version`; return the version it pointed at before (or None)."""
        check_alias(alias)
        with self._moving(name, alias) as (previous, moves, log):
            with self.errors(
                f"promoting {name}/{version}",
                not_found=f"model '{name}' has no version {version}; list them with: "
                f"proto2prod versions {name}",
            ):
                target = str(self.client.get_model_version(name, str(version)).version)
            if previous == target:
                return previous
            self._write(
                f"promoting {name}/{target} to @{alias}",
                self.client.set_registered_model_alias,
                name,
                alias,
                target,
            )
            if previous is not None:
                moves.append({"from": previous, "to": target})
            self._record(name, alias, moves, log, "promote", previous, target)
        return previous

    def rollback(self, name: str, alias: str = "production") -> tuple[str, str]:
        """Move `alias` back to where it pointed before the last promote: (from, to).

        A recorded move whose target is not where the alias points did not happen (a
        promote that failed after recording, or one that lost a race with another host):
        it is skipped, so a rollback never reports a move it did not make.
        """
        check_alias(alias)
        with self._moving(name, alias) as (current, moves, log):
            if current is None:
                raise ModelNotFound(f"model '{name}' has no alias '{alias}' to roll back")
            while moves and moves[-1]["to"] not in (current, None):
                moves.pop()
            if not moves:
                raise ModelNotFound(
                    f"{name}@{alias} has no earlier version recorded; "
                    f"use: proto2prod promote {name} VERSION --alias {alias}"
                )
            previous = str(moves.pop()["from"])
            self._write(
                f"rolling back {name}@{alias}",
                self.client.set_registered_model_alias,
                name,
                alias,
                previous,
            )
            self._record(name, alias, moves, log, "rollback", current, previous)
        return current, previous

    @contextlib.contextmanager
    def _moving(
        self, name: str, alias: str
    ) -> Iterator[tuple[str | None, list[dict[str, str | None]], list[dict[str, str | None]]]]:
        """Hold this host's lock on `name@alias` and read its state once: (where it points,
        its recorded moves, its log). Moves of one alias from this host are serialised, so
        two promotes cannot both read the same state and lose one another's move."""
        with alias_lock(self.uri, name, alias):
            model = self._model(name)
            aliases, tags = model.aliases or {}, model.tags or {}
            current = str(aliases[alias]) if alias in aliases else None
            yield current, _moves(tags, alias), json.loads(tags.get(log_tag(alias), "[]"))

    def _record(
        self,
        name: str,
        alias: str,
        moves: list[dict[str, str | None]],
        log: list[dict[str, str | None]],
        action: str,
        old: str | None,
        new: str,
    ) -> None:
        """After the alias moved: its history (what rollback reads) and its log (with time)."""
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "action": action,
            "from": old,
            "to": new,
        }
        what = f"recording the move of {name}@{alias} ({old} -> {new}; the alias has moved)"
        set_tag = self.client.set_registered_model_tag
        self._write(what, set_tag, name, history_tag(alias), json.dumps(moves[-HISTORY_KEEP:]))
        self._write(what, set_tag, name, log_tag(alias), json.dumps((log + [entry])[-LOG_KEEP:]))

    def _write(self, what: str, call: Any, *args: Any) -> None:
        """One registry write, retried while SQLite is busy (another writer holds its lock)
        for up to the registry timeout."""
        deadline = time.monotonic() + self.settings.registry_timeout_s
        delay = 0.05
        with self.errors(what):
            while True:
                try:
                    call(*args)
                    return
                except mlflow_error() as exc:  # MLflow wraps SQLite's busy error in its own
                    if not sqlite_busy(exc):
                        raise
                    if time.monotonic() + delay > deadline:
                        raise RegistryBusy(
                            f"{what}: the registry's SQLite database stayed locked by another "
                            f"writer for {self.settings.registry_timeout_s:g} s "
                            f"(PROTO2PROD_REGISTRY_TIMEOUT_S); retry"
                        ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
