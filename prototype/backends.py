"""Where a UI's predictions come from: the model in-process, or the service over HTTP.

Both take JSON-encoded items and give one `Outcome` per item, so one bad item (or one
failing request) shows its own message while the others answer. Errors are readable
sentences for a person, never stack traces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from proto2prod.errors import (
    DefinitionError,
    InvalidInput,
    NotAService,
    Overloaded,
    Proto2ProdError,
    Refused,
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

    def stream(self, item: Any) -> Iterator[Outcome]:
        """A generative model's text for `item`, one chunk per outcome as it comes; an
        outcome with `error` ends it."""
        ...


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

    def stream(self, item: Any) -> Iterator[Outcome]:
        try:
            for chunk, _ in self.predictor.stream(item):
                yield Outcome(output=chunk, version=self.version)
        except InvalidInput as invalid:
            yield Outcome(error=str(invalid))


class Remote:
    """A thin front end of the service's `/predict` (decoupled): no torch, no registry here,
    only `proto2prod.client.Client`.

    It survives whatever answers: a body that is not JSON, a list, a 422 without an index,
    a 200 without `outputs`, an answer of hundreds of MB (refused as it streams in): each is
    one readable sentence, never a traceback.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
        retry_budget_s: float = 5.0,
    ) -> None:
        from proto2prod.client import Client

        self.client = Client(
            url, api_key, timeout=timeout, transport=transport, retry_budget_s=retry_budget_s
        )
        self.url = self.client.url
        self.source = self.url

    def metadata(self) -> dict[str, Any]:
        """The service's `/metadata`: a JSON object naming its model, or one clear error."""
        try:
            return self.client.metadata()
        except Refused as refused:
            if refused.status in (401, 403):
                raise Proto2ProdError(
                    f"{self.url} wants an API key ({refused}); set PROTO2PROD_API_KEY to a key "
                    f"from: proto2prod keys create NAME"
                ) from None
            if refused.status >= 500:
                raise ServiceUnreachable(f"{refused}; retry shortly") from None
            raise NotAService(f"{refused}: not a proto2prod service's metadata") from None

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
                found = self.client.predict([items[i] for i in pending])
            except InvalidInput as invalid:
                if invalid.index is None or not 0 <= invalid.index < len(pending):
                    outcomes.update((i, Outcome(error=_explain(invalid))) for i in pending)
                    break
                outcomes[pending.pop(invalid.index)] = Outcome(error=_explain(invalid))
                continue
            except Proto2ProdError as failed:
                outcomes.update((i, Outcome(error=_explain(failed))) for i in pending)
                break
            outcomes.update(
                (i, Outcome(output=o, version=found.version))
                for i, o in zip(pending, found.outputs, strict=True)
            )
            break
        return [outcomes[i] for i in range(len(items))]

    def stream(self, item: Any) -> Iterator[Outcome]:
        """`/generate`'s chunks as they come."""
        try:
            for chunk in self.client.generate(item):
                yield Outcome(output=chunk.text, version=chunk.version)
        except Proto2ProdError as failed:
            yield Outcome(error=_explain(failed))


def _explain(error: Proto2ProdError) -> str:
    """One sentence for a person, for the row an error stands in for."""
    if isinstance(error, ServiceUnreachable):
        return f"The model service is not reachable: {error}"
    if isinstance(error, NotAService):
        return f"The model service gave an answer this page cannot read: {error}"
    if isinstance(error, Overloaded):
        return f"The model service is busy: {error}. Try again."
    if isinstance(error, InvalidInput) or error.status < 500:
        return f"The service refused this input ({error.status}): {error}"
    return f"The service could not answer ({error.status}): {error}. Try again."


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
