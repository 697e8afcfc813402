"""The model a service holds: loading by reference, checking the alias, swapping live.

No BentoML here, so the logic is testable in-process; `service.app` wires it to HTTP.

Trust boundary: the service runs the definition installed with it; from the registry it
takes only weights (safetensors, sha256-verified) and metadata. A version whose fields
differ from the installed definition, or whose weights do not fit its network, is refused
while the current version keeps serving.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proto2prod.definition import Definition, load_definition
from proto2prod.errors import (
    CacheUnavailable,
    DeviceUnavailable,
    IncompatibleVersion,
    ModelNotFound,
    Proto2ProdError,
    RegistryError,
    RegistryUnavailable,
    gpu_required_message,
)
from proto2prod.registry import (
    LocalVersion,
    ModelRef,
    Registry,
    VersionInfo,
    cached,
    fetch,
    remember_alias,
)
from proto2prod.settings import ServiceSettings

if TYPE_CHECKING:
    from proto2prod.predictor import Predictor  # imported when a version loads: it needs torch

log = logging.getLogger("proto2prod.service")


def _now() -> float:
    return time.time()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    # milliseconds: two checks a client tells apart may fall within one second
    stamp = datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class Loaded:
    """One version, loaded and warmed up. Requests hold on to the one they started with."""

    predictor: Predictor
    info: VersionInfo
    loaded_at: float
    from_cache: bool
    reference: dict[str, Any] | None = None
    """The version's reference statistics (drift); None when it was published without."""

    @property
    def version(self) -> str:
        return self.info.version


def find_definition(settings: ServiceSettings, registry: Registry, ref: ModelRef) -> Definition:
    """The installed definition to run: `PROTO2PROD_DEFINITION`, else the recorded entry."""
    entry = settings.definition
    if entry is None:
        try:
            info: VersionInfo | None = registry.resolve(ref)
        except RegistryUnavailable:
            local = cached(registry, ref)
            info = local.info if local else None
        entry = info.tags.get("proto2prod.entry") if info else None
        if not entry:
            raise IncompatibleVersion(
                f"cannot tell which model definition serves {ref}: the registry is unreachable "
                f"and nothing is cached, or the version records no entry point; pass "
                f"--definition FILE.py (PROTO2PROD_DEFINITION)"
            )
    definition = load_definition(entry)
    if definition.model.name != ref.name:
        raise IncompatibleVersion(
            f"the definition {definition.entry} is model '{definition.model.name}', "
            f"not '{ref.name}'; pass the definition of '{ref.name}'"
        )
    return definition


class ModelRuntime:
    """Holds the current version of one model reference and swaps it when the alias moves."""

    def __init__(
        self,
        config: ServiceSettings,
        definition: Definition,
        registry: Registry,
        *,
        worker: int = 1,
        drop_when_gone: bool = False,
    ) -> None:
        self.config = config
        self.drop_when_gone = drop_when_gone
        """Unload when the reference no longer resolves (a challenger whose alias was
        deleted); the champion keeps serving what it has."""
        self.worker = worker
        """BentoML's worker index (1-based): which GPU this process takes."""
        self.definition = definition
        self.registry = registry
        self.ref = ModelRef.parse(config.model)
        self.current: Loaded | None = None
        self.device = self._pick_device()
        self.last_check: float | None = None
        self.last_good_sync: float | None = None
        self.registry_reachable: bool | None = None
        self.registry_tags: dict[str, str] = {}
        """The tags of the version the reference resolved to at the last check."""
        self.last_error: str | None = None
        self.last_swap_error: str | None = None
        self.alias_changed_at: float | None = None
        self.not_ready_reason: str | None = "loading"
        self.swaps = 0
        self.failures = 0
        """Registry checks failed in a row; the poll interval doubles with each."""
        self._refused: dict[str, str] = {}  # version -> why; versions are immutable
        self._lock = threading.Lock()
        self._examples = definition.model.examples()

    def _pick_device(self) -> Any:
        import torch

        from proto2prod.predictor import pick_device

        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        cuda = torch.cuda.is_available()
        if self.config.require_gpu and not cuda:
            raise DeviceUnavailable(gpu_required_message())
        wanted = self.config.device
        if wanted and wanted.startswith("cuda") and not cuda:
            log.warning("PROTO2PROD_DEVICE=%s but CUDA is not available: using the CPU", wanted)
            wanted = "cpu"
        return pick_device(wanted, worker=self.worker)

    # -- loading --------------------------------------------------------------------------
    def _load(self, local: LocalVersion, *, from_cache: bool) -> Loaded:
        """Verify fields, load weights, warm up: everything that can fail, before a swap."""
        from proto2prod.predictor import Predictor

        info, model = local.info, self.definition.model
        recorded = info.spec
        if recorded and recorded != model.spec():
            raise IncompatibleVersion(
                f"{info.name}/{info.version} was published with fields {recorded}, the "
                f"installed definition {self.definition.entry} has {model.spec()}"
            )
        try:
            predictor = Predictor(model, local.weights, self.device, half=self.config.half)
            predictor.warm_up()
        except Proto2ProdError:
            raise
        except Exception as exc:  # not safetensors, a warm-up crash...: refuse the version
            raise IncompatibleVersion(
                f"{info.name}/{info.version} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            reference = local.reference()
        except Proto2ProdError as exc:  # drift cannot be checked; the version still serves
            log.warning("%s/%s: no drift check: %s", info.name, info.version, exc)
            reference = None
        return Loaded(
            predictor=predictor,
            info=info,
            loaded_at=_now(),
            from_cache=from_cache,
            reference=reference,
        )

    def start(self) -> None:
        """First load: from the registry, else the cached version of the reference."""
        try:
            self.check()
        except RegistryUnavailable:
            pass  # recorded by check(); fall back to the cache below
        if self.current is not None:
            return
        if self.registry_reachable is False:
            try:
                local = cached(self.registry, self.ref)
            except Proto2ProdError as exc:
                local, self.last_error = None, str(exc)
            if local is None:
                self.not_ready_reason = (
                    f"registry unreachable at {self.registry.uri} and no cached version of "
                    f"{self.ref}: not ready until the registry answers"
                )
                log.error(self.not_ready_reason)
                return
            self._swap(self._load(local, from_cache=True))
            log.warning(
                "registry unreachable: serving cached %s/%s for %s",
                local.info.name,
                local.info.version,
                self.ref,
            )

    def check(self, *, retry_refused: bool = False) -> dict[str, Any]:
        """Re-resolve the reference; load and swap in a new version if it moved.

        A version refused once is not downloaded again on every poll (its artifacts cannot
        change); `retry_refused` (what /admin/reload does) tries it again.
        """
        with self._lock:
            self.last_check = _now()
            try:
                info = self.registry.resolve(self.ref, with_metrics=False)
            except RegistryUnavailable as exc:
                self.registry_reachable = False
                self.last_error = str(exc)
                self.failures += 1
                raise
            except (ModelNotFound, RegistryError) as exc:
                self.registry_reachable = True
                self.last_error = str(exc)
                if self.drop_when_gone and isinstance(exc, ModelNotFound) and self.current:
                    log.warning("%s no longer resolves (%s): unloaded", self.ref, exc)
                    self.current = None
                if self.current is None:
                    self.not_ready_reason = str(exc)
                    log.error("%s", exc)
                return self._check_result(swapped=False)
            self.registry_reachable = True
            self.last_good_sync = self.last_check
            self.registry_tags = info.tags
            self.last_error = None
            self.failures = 0
            if self.current is not None and info.version == self.current.version:
                return self._check_result(swapped=False)
            if info.version in self._refused and not retry_refused:
                self.last_swap_error = self._refused[info.version]
                return self._check_result(swapped=False)
            try:
                local = fetch(self.registry, info)
                loaded = self._load(local, from_cache=False)
            except RegistryUnavailable as exc:  # mid-download: not the version's fault
                self.registry_reachable = False
                self.last_error = str(exc)
                self.failures += 1
                raise
            except CacheUnavailable as exc:  # a full disk is not the version's fault either
                self.last_error = str(exc)
                self.failures += 1
                if self.current is None:
                    self.not_ready_reason = str(exc)
                raise
            except Proto2ProdError as exc:
                label = f"{info.name}/{info.version}"
                self.last_swap_error = str(exc) if str(exc).startswith(label) else f"{label}: {exc}"
                self._refused[info.version] = self.last_swap_error
                log.error("refused %s", self.last_swap_error)
                if self.current is None:
                    self.not_ready_reason = self.last_swap_error
                return self._check_result(swapped=False)
            if self.ref.alias:
                try:
                    remember_alias(local, self.ref.alias)
                except CacheUnavailable as exc:  # only start-ups without a registry need it
                    log.warning("%s", exc)
            self._swap(loaded)
            return self._check_result(swapped=True)

    def failed(self, what: str, exc: Exception) -> None:
        """A check that failed outside the registry's own errors (our bug, or the user's
        definition): counted towards the back-off, said in /metadata."""
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.current is None:
            self.not_ready_reason = f"{what} failed: {self.last_error}"

    def _swap(self, loaded: Loaded) -> None:
        before = self.current.version if self.current else None
        self.current = loaded  # one reference assignment: requests see old or new, whole
        self.not_ready_reason = None
        self.last_swap_error = None
        if before is not None:
            self.alias_changed_at = loaded.loaded_at
            self.swaps += 1
        log.info(
            "serving %s/%s for %s (was %s) on %s",
            loaded.info.name,
            loaded.version,
            self.ref,
            before,
            self.device,
        )

    def _check_result(self, *, swapped: bool) -> dict[str, Any]:
        return {
            "swapped": swapped,
            "version": self.current.version if self.current else None,
            "registry_reachable": self.registry_reachable,
            "error": self.last_swap_error or self.last_error,
        }

    def next_poll_in(self) -> float:
        """Poll interval, doubled per consecutive failure up to `poll_max_s`."""
        backed_off = self.config.poll_s * (2 ** min(self.failures, 30))
        return min(backed_off, self.config.poll_max_s)  # settings ensure poll_s <= poll_max_s

    # -- reporting ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.current is not None

    def metadata(self) -> dict[str, Any]:
        cur = self.current
        return {
            "name": self.ref.name,
            "reference": str(self.ref),
            "alias": self.ref.alias,
            "version": cur.version if cur else None,
            "run_id": cur.info.run_id if cur else None,
            "device": str(self.device),
            "worker": {"index": self.worker, "of": self.config.workers, "pid": os.getpid()},
            "dtype": str(cur.predictor.dtype).removeprefix("torch.") if cur else None,
            "definition": self.definition.entry,
            "loaded_at": _iso(cur.loaded_at) if cur else None,
            "served_from_cache": cur.from_cache if cur else None,
            "last_registry_check": _iso(self.last_check),
            "last_good_sync": _iso(self.last_good_sync),
            "registry_reachable": self.registry_reachable,
            "registry_status": {True: "reachable", False: "registry unreachable", None: "unknown"}[
                self.registry_reachable
            ],
            "registry_error": self.last_error,
            "registry_failures": self.failures,
            "poll_interval_s": self.next_poll_in(),
            "last_swap_error": self.last_swap_error,
            "alias_changed_at": _iso(self.alias_changed_at),
            "swaps": self.swaps,
            "ready": self.ready,
            "not_ready_reason": None if self.ready else self.not_ready_reason,
            "inputs": self.definition.model.inputs.json_schema(),
            "outputs": self.definition.model.outputs.json_schema(),
            # what a thin front end needs to draw the model's UI without importing it
            "ui": {
                "title": self.definition.model.title,
                "description": self.definition.model.description,
                "spec": self.definition.model.spec(),
                "examples": self._examples,
            },
        }
