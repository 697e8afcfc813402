"""Where a UI's predictions come from: the model in-process, or the service over HTTP.

Both take JSON-encoded items and give one `Outcome` per item, so one bad item (or one
failing request) shows its own message while the others answer. Errors are readable
sentences for a person, never stack traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from proto2prod.errors import (
    DefinitionError,
    InvalidInput,
    NotAService,
    Proto2ProdError,
    ServiceUnreachable,
)
from proto2prod.settings import Settings

if TYPE_CHECKING:
    import httpx

    from proto2prod.predictor import Predictor
    from proto2prod.prototype.spec import UISpec


@dataclass(frozen=True)
class Outcome:
    """One item's answer: an output, or a message saying why there is none."""

    output: Any = None
    error: str | None = None
    version: str | None = None


class Backend(Protocol):
    source: str
    """Where answers come from, for the UI: 'in-process' or the service's URL."""

    def predict(self, items: list[Any]) -> list[Outcome]: ...


class InProcess:
    """The model inside the web process (model-in-server): fail fast, share with colleagues."""

    source = "in-process"

    def __init__(self, predictor: Predictor, version: str) -> None:
        self.predictor = predictor
        self.version = version

    def predict(self, items: list[Any]) -> list[Outcome]:
        return [
            Outcome(error=str(result))
            if isinstance(result, InvalidInput)
            else Outcome(output=result, version=self.version)
            for result in self.predictor.predict_each(items)
        ]


MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The most of a `/predict` answer read (a row of images fits many times over); a larger one
is refused as it streams in, never held whole."""
MAX_METADATA_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """A bounded HTTP answer: status, headers and body as bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        import json

        try:
            found = json.loads(self.body)
        except (ValueError, RecursionError):
            return None
        return found if isinstance(found, dict) else None


class Remote:
    """A thin client of the service's `/predict` (decoupled): no torch, no registry here.

    It survives whatever answers: a body that is not JSON, a list, a 422 without an index,
    a 200 without `outputs`, an answer of hundreds of MB (read up to `MAX_ANSWER_BYTES`,
    then refused): each is one readable sentence, never a traceback.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.source = self.url
        # A service with API keys wants one on /predict and /metadata (PROTO2PROD_API_KEY).
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client: httpx.Client = httpx.Client(
            base_url=self.url, timeout=timeout, transport=transport, headers=headers
        )

    def _send(self, method: str, path: str, limit: int, **kwargs: Any) -> Reply:
        """One request, its answer read up to `limit` bytes. `ServiceUnreachable` when it
        cannot be sent or read, `NotAService` when the answer is larger than `limit`."""
        import httpx

        try:
            with self.client.stream(method, path, **kwargs) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise NotAService(self._too_large(path, int(declared), limit))
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise NotAService(self._too_large(path, size, limit))
                    chunks.append(chunk)
                return Reply(response.status_code, dict(response.headers), b"".join(chunks))
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(
                f"cannot reach {self.url}{path} ({type(exc).__name__}); start the service with: "
                f"proto2prod serve NAME@ALIAS --port PORT"
            ) from None

    def _too_large(self, path: str, size: int, limit: int) -> str:
        return (
            f"{self.url}{path} answered more than {limit // 1_000_000} MB ({size} bytes so far): "
            f"not a proto2prod service's answer"
        )

    def metadata(self) -> dict[str, Any]:
        """The service's `/metadata`: a JSON object naming its model, or one clear error."""
        reply = self._send("GET", "/metadata", MAX_METADATA_BYTES)
        if reply.status in (401, 403):
            raise Proto2ProdError(
                f"{self.url} wants an API key ({reply.status}: {_message(reply)}); set "
                f"PROTO2PROD_API_KEY to a key from: proto2prod keys create NAME"
            )
        if reply.status >= 500:
            raise ServiceUnreachable(
                f"{self.url}/metadata answered {reply.status} ({_message(reply)}); retry shortly"
            )
        found = reply.object()
        if reply.status != 200 or found is None or not isinstance(found.get("name"), str):
            raise NotAService(
                f"{self.url}/metadata answered {reply.status} with "
                f"{_describe(reply)}, not a proto2prod service's metadata; check the URL"
            )
        return found

    def spec(self) -> UISpec:
        """What the UI shows, from `/metadata` (refused clearly when it is not there)."""
        from proto2prod.prototype.spec import UISpec

        found = self.metadata()
        try:
            return UISpec.from_metadata(found)
        except (KeyError, TypeError, ValueError, AttributeError, Proto2ProdError) as exc:
            raise NotAService(
                f"{self.url}/metadata has no usable UI description ({type(exc).__name__}: "
                f"{exc}); is it a proto2prod service of this version?"
            ) from None

    def predict(self, items: list[Any]) -> list[Outcome]:
        """One request for the batch. A 422 names the item at fault (`index`): that row
        gets the message and the others are sent again, so one bad upload fails only its
        own row, at one more request per bad item."""
        outcomes: dict[int, Outcome] = {}
        pending = list(range(len(items)))
        while pending:
            try:
                reply = self._send(
                    "POST",
                    "/predict",
                    MAX_ANSWER_BYTES,
                    json={"inputs": [items[i] for i in pending]},
                )
            except (ServiceUnreachable, NotAService) as exc:
                message = (
                    f"The model service at {self.url} is not reachable. Is it running? Start "
                    f"it with: proto2prod serve NAME@ALIAS"
                    if isinstance(exc, ServiceUnreachable)
                    else f"The model service gave an answer too large to read: {exc}"
                )
                outcomes.update((i, Outcome(error=message)) for i in pending)
                break
            if reply.status == 200:
                body = reply.object() or {}
                outputs = body.get("outputs")
                if not isinstance(outputs, list) or len(outputs) != len(pending):
                    error = (
                        f"The model service answered 200 with {_describe(reply)}, not "
                        f"{len(pending)} outputs: is {self.url} a proto2prod service?"
                    )
                    outcomes.update((i, Outcome(error=error)) for i in pending)
                    break
                version = reply.headers.get("x-model-version") or str(body.get("version", ""))
                outcomes.update(
                    (i, Outcome(output=o, version=version))
                    for i, o in zip(pending, outputs, strict=True)
                )
                break
            bad = _bad_index(reply, len(pending))
            if bad is None:  # not about one item: every row says why
                outcomes.update((i, Outcome(error=_explain(reply))) for i in pending)
                break
            outcomes[pending.pop(bad)] = Outcome(error=_explain(reply))
        return [outcomes[i] for i in range(len(items))]


def _message(reply: Reply) -> str:
    found = reply.object() or {}
    message = found.get("message") or found.get("error")
    return str(message) if isinstance(message, str | int | float) and message else _describe(reply)


def _describe(reply: Reply) -> str:
    """What an answer is, in a few words (never its whole body)."""
    if not reply.body:
        return "an empty body"
    found = reply.object()
    if found is not None:
        return f"a JSON object with {', '.join(sorted(map(str, found))[:5]) or 'no keys'}"
    kind = reply.headers.get("content-type", "unknown type").split(";")[0]
    return f"{len(reply.body)} bytes of {kind}"


def _explain(reply: Reply) -> str:
    if reply.status < 500:
        return f"The service refused this input ({reply.status}): {_message(reply)}"
    return f"The service could not answer ({reply.status}): {_message(reply)}. Try again."


def _bad_index(reply: Reply, sent: int) -> int | None:
    """The index a 422 names (the service's InvalidInput body), if it is one of `sent`."""
    if reply.status != 422:
        return None
    index = (reply.object() or {}).get("index")
    return (
        index
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < sent
        else None
    )


def in_process(
    definition_ref: str,
    *,
    model_ref: str | None,
    weights: Path | None = None,
    settings: Settings,
) -> tuple[InProcess, UISpec]:
    """Load the definition; weights from the registry (`model_ref`), a file trained elsewhere
    (`weights`), or a fresh training when the definition has `train()`."""
    from proto2prod.definition import load_definition
    from proto2prod.model import NullProgress
    from proto2prod.predictor import Predictor
    from proto2prod.prototype.spec import UISpec

    definition = load_definition(definition_ref)
    model = definition.model
    if model_ref:
        from proto2prod.registry import ModelRef, Registry, fetch

        ref = ModelRef.parse(model_ref)
        if ref.name != model.name:
            raise Proto2ProdError(
                f"--model {model_ref} is model '{ref.name}', the definition is '{model.name}'"
            )
        local = fetch(Registry(settings), ref)
        predictor = Predictor(model, local.weights)
        version = local.info.version
    elif weights is not None:
        from proto2prod.registry.publish import check_weights
        from proto2prod.weights import read_weights

        state = read_weights(weights)
        check_weights(model, state)
        predictor = Predictor(model, state)
        version = f"weights from {weights.name}"
    else:
        if not model.has_train:
            raise DefinitionError(
                f"{definition.entry} has no train(): give weights with --model NAME@ALIAS "
                f"(the registry) or --weights PATH (a file trained elsewhere)"
            )
        trained = model.train(NullProgress())
        predictor = Predictor(model, trained.weights)
        version = "trained now"
    return InProcess(predictor, version), UISpec.from_model(model)


def remote(url: str, api_key: str | None = None) -> tuple[Remote, UISpec]:
    """The service's thin client; `api_key` defaults to `PROTO2PROD_API_KEY`."""
    import os

    backend = Remote(url, api_key=api_key or os.environ.get("PROTO2PROD_API_KEY") or None)
    return backend, backend.spec()
