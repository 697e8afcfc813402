"""Every error proto2prod raises on purpose, in one tree.

    Proto2ProdError                    base; `status` is the HTTP status a service answers with
    ├── DefinitionError                a model definition breaks a rule (names the rule)
    ├── InvalidInput            422    a JSON value does not fit its field (names field and index)
    ├── InvalidWeights          422    a weights file that cannot be read as a state dict
    ├── MissingExtra                   an optional dependency group is not installed
    ├── CacheUnavailable        503    the local model cache cannot be written (disk full...)
    └── RegistryError                  anything about the MLflow registry
        ├── ModelNotFound       404    unknown model name, version or alias
        ├── RegistryUnavailable 503    the tracking server cannot be reached
        │   └── RegistryBusy    503    its SQLite database stayed locked by another writer
        ├── IntegrityError      502    an artifact does not match its recorded sha256
        └── IncompatibleVersion 409    weights or fields that do not fit the installed definition

Messages say what happened, the offending value and how to fix it, because the CLI prints
them as its one line of output and the service returns them as the error body. The CLI
exits 75 (EX_TEMPFAIL: retry) for the transient ones, RegistryUnavailable and
CacheUnavailable, and 2 for every other.
"""

from __future__ import annotations

from typing import Any


class Proto2ProdError(Exception):
    """Base of all proto2prod errors."""

    status: int = 500

    def to_json(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": str(self)}


class DefinitionError(Proto2ProdError):
    """A model definition file breaks a rule of the contract."""

    def __init__(self, rule: str, *, where: str | None = None) -> None:
        self.rule = rule
        self.where = where
        super().__init__(f"{where}: {rule}" if where else rule)


class InvalidInput(Proto2ProdError):
    """A JSON value does not fit the field it was sent for."""

    status = 422

    def __init__(
        self, field: str, problem: str, expected: str, *, index: int | None = None
    ) -> None:
        self.field = field
        self.problem = problem
        self.expected = expected
        self.index = index
        where = f"inputs[{index}]" if index is not None else "input"
        super().__init__(f"{where} (field '{field}'): {problem}; expected {expected}")

    def at(self, index: int) -> InvalidInput:
        """The same error, located at item `index` of a batch."""
        return InvalidInput(self.field, self.problem, self.expected, index=index)

    def to_json(self) -> dict[str, Any]:
        # Never echo the offending value itself: it may be megabytes or private.
        return {
            "error": "InvalidInput",
            "message": str(self),
            "index": self.index,
            "field": self.field,
            "problem": self.problem,
            "expected": self.expected,
        }


class InvalidWeights(Proto2ProdError):
    """A weights file is not a state dict proto2prod can read without unpickling code."""

    status = 422


class MissingExtra(Proto2ProdError):
    """An optional dependency group is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"this needs '{module}', which is not installed; run: pip install 'proto2prod[{extra}]'"
        )


class CacheUnavailable(Proto2ProdError):
    """The local model cache cannot be written (a full disk, permissions). Transient: the
    version is not at fault, so it is retried, never refused."""

    status = 503


class RegistryError(Proto2ProdError):
    """Base of the errors about the model registry."""


class ModelNotFound(RegistryError):
    status = 404


class RegistryUnavailable(RegistryError):
    status = 503


class RegistryBusy(RegistryUnavailable):
    """The registry's SQLite database stayed locked by another writer past the timeout."""


class IntegrityError(RegistryError):
    status = 502


class IncompatibleVersion(RegistryError):
    status = 409


class DeviceUnavailable(Proto2ProdError):
    """A GPU was required (`PROTO2PROD_REQUIRE_GPU=1`) and torch sees none."""

    status = 503


def gpu_required_message() -> str:
    return (
        "PROTO2PROD_REQUIRE_GPU=1 but torch sees no CUDA device; install a CUDA build of "
        "torch on a GPU machine, or unset PROTO2PROD_REQUIRE_GPU to run on the CPU"
    )
