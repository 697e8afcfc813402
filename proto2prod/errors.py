"""Every error proto2prod raises on purpose, in one tree.

                                    HTTP  CLI exit
    Proto2ProdError                  500   2    base
    ├── DefinitionError                    2    a model definition breaks a rule (names it)
    ├── InvalidInput                 422   2    a JSON value does not fit its field (field, index)
    ├── InvalidWeights               422   2    a weights file that is not a readable state dict
    ├── InvalidReference             422   2    not a model reference, or an unusable alias
    ├── InvalidArgument                    2    a command-line option that cannot be used
    ├── SettingsError                      2    an environment variable that cannot be used
    ├── MissingExtra                       2    an optional dependency group is not installed
    ├── DeviceUnavailable            503   2    a GPU was required and torch sees none
    ├── CacheUnavailable             503  75    the local model cache cannot be written
    ├── ServiceUnreachable           503  75    a service a command asks does not answer
    ├── NotAService                  502   2    what answered is not a proto2prod service
    ├── RegistryError                      2    anything else about the MLflow registry
    │   ├── ModelNotFound            404   3    unknown model name, version or alias
    │   ├── RegistryUnavailable      503  75    the tracking server cannot be reached
    │   │   └── RegistryBusy         503  75    its SQLite database stayed locked
    │   ├── IntegrityError           502   2    an artifact does not match its recorded sha256
    │   └── IncompatibleVersion      409   2    weights or fields that do not fit the definition
    └── Refused                            2    the service's answers to a request it will not
        ├── InvalidJSON, InvalidRequest 400     serve (body, size, load, time, credentials),
        ├── Unauthorized 401                    each with its status and, for the ones a
        ├── AdminDisabled, KeyForbidden 403     client should retry, `Retry-After`
        ├── RequestTimeout 408
        ├── PayloadTooLarge, TooManyItems 413
        ├── UnsupportedMediaType 415
        ├── TooManyRequests 429
        ├── InvalidOutput, ModelFailed, InternalError 500
        ├── NotReady, Overloaded 503
        └── Timeout 504

Exit codes: 2 "fix your input", 3 "not found" (a name, version or alias), 75 (EX_TEMPFAIL)
"nothing wrong with the input, retry later"; 1 only for what is our own bug (a traceback).
Messages say what happened, the offending value and how to fix it: the CLI prints them as
its one line of output and the service returns them as the error body (`to_json`, the one
place a body is built from an exception).
"""

from __future__ import annotations

from typing import Any

EXIT_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_RETRY = 75  # EX_TEMPFAIL (sysexits.h)


class Proto2ProdError(Exception):
    """Base of all proto2prod errors."""

    status: int = 500
    """The HTTP status the service answers with."""
    exit_code: int = EXIT_INPUT
    """The CLI's exit code."""
    retry_after: int | None = None
    """Seconds a client should wait before retrying (`Retry-After`), where retrying helps."""

    def to_json(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": str(self)}


class DefinitionError(Proto2ProdError):
    """A model definition file breaks a rule of the contract."""

    def __init__(self, rule: str, *, where: str | None = None) -> None:
        self.rule = rule
        self.where = where
        super().__init__(f"{where}: {rule}" if where else rule)


class InvalidInput(Proto2ProdError):
    """A JSON value does not fit the field it was sent for.

    `key` is set for a part of named inputs (`inputs = {"image": ..., "hint": ...}`): the
    message then reads `inputs[1].hint: got a string, expected a finite number...`."""

    status = 422

    def __init__(
        self,
        field: str,
        problem: str,
        expected: str,
        *,
        index: int | None = None,
        key: str | None = None,
    ) -> None:
        self.field = field
        self.problem = problem
        self.expected = expected
        self.index = index
        self.key = key
        where = f"inputs[{index}]" if index is not None else "input"
        if key is not None:
            message = f"{where}.{key}: {problem}, expected {expected}"
        else:
            message = f"{where} (field '{field}'): {problem}; expected {expected}"
        super().__init__(message)

    def within(self, key: str) -> InvalidInput:
        """The same problem, said of the part `key` of named inputs."""
        return InvalidInput(key, self.problem, self.expected, index=self.index, key=key)

    def to_json(self) -> dict[str, Any]:
        # Never echo the offending value itself: it may be megabytes or private.
        found = {
            **super().to_json(),
            "index": self.index,
            "field": self.field,
            "problem": self.problem,
            "expected": self.expected,
        }
        if self.key is not None:  # a part of named inputs: the client rebuilds the message
            found["key"] = self.key
        return found


class InvalidWeights(Proto2ProdError):
    """A weights file is not a state dict proto2prod can read without unpickling code."""

    status = 422


class InvalidReference(Proto2ProdError):
    """Text that is not a model reference (`NAME@ALIAS`, `NAME/VERSION`, `NAME`), or an
    alias MLflow would not accept."""

    status = 422


class InvalidArgument(Proto2ProdError):
    """A command-line option or argument that cannot be used (the message names it)."""


class SettingsError(Proto2ProdError):
    """An environment variable holds a value that cannot be used."""


class MissingExtra(Proto2ProdError):
    """An optional dependency group is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"this needs '{module}', which is not installed; run: pip install 'proto2prod[{extra}]'"
        )


class DeviceUnavailable(Proto2ProdError):
    """A GPU was required (`PROTO2PROD_REQUIRE_GPU=1`) and torch sees none."""

    status = 503


class CacheUnavailable(Proto2ProdError):
    """The local model cache cannot be written (a full disk, permissions). Transient: the
    version is not at fault, so it is retried, never refused."""

    status = 503
    exit_code = EXIT_RETRY
    retry_after = 5


class ServiceUnreachable(Proto2ProdError):
    """A running proto2prod service did not answer a CLI command (`proto2prod drift`)."""

    status = 503
    exit_code = EXIT_RETRY


class NotAService(Proto2ProdError):
    """The URL answered, but not as a proto2prod service does (not JSON, a list, no
    `outputs`, an answer too large to read): fix the URL."""

    status = 502


class RegistryError(Proto2ProdError):
    """Base of the errors about the model registry."""


class ModelNotFound(RegistryError):
    status = 404
    exit_code = EXIT_NOT_FOUND


class RegistryUnavailable(RegistryError):
    status = 503
    exit_code = EXIT_RETRY
    retry_after = 5


class RegistryBusy(RegistryUnavailable):
    """The registry's SQLite database stayed locked by another writer past the timeout."""


class IntegrityError(RegistryError):
    status = 502


class IncompatibleVersion(RegistryError):
    status = 409


class Refused(Proto2ProdError):
    """The service will not serve this request; subclasses set the status.

    `details` go into the body beside `error` and `message` (e.g. `field`, `index`).
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), **self.details}


class InvalidJSON(Refused):
    status = 400


class InvalidRequest(Refused):
    status = 400


class Unauthorized(Refused):
    status = 401


class AdminDisabled(Refused):
    status = 403


class KeyForbidden(Refused):
    """A valid API key without the scope the route needs."""

    status = 403


class RequestTimeout(Refused):
    status = 408


class PayloadTooLarge(Refused):
    status = 413


class TooManyItems(Refused):
    status = 413


class UnsupportedMediaType(Refused):
    status = 415


class TooManyRequests(Refused):
    status = 429
    retry_after = 1


class InvalidOutput(Refused):
    status = 500


class InternalError(Refused):
    """Our own bug in a layer of the service: one JSON 500 at once, the traceback in the log."""

    status = 500


class ModelFailed(Refused):
    """The forward pass raised: every request in its batch gets this (logged with the
    traceback: the definition's bug, or a broken version)."""

    status = 500


class NotReady(Refused):
    status = 503
    retry_after = 5


class Overloaded(Refused):
    """More is waiting (items for the model, or body bytes) than the bounds allow."""

    status = 503
    retry_after = 1


class Timeout(Refused):
    status = 504


def gpu_required_message() -> str:
    return (
        "PROTO2PROD_REQUIRE_GPU=1 but torch sees no CUDA device; install a CUDA build of "
        "torch on a GPU machine, or unset PROTO2PROD_REQUIRE_GPU to run on the CPU"
    )
