"""Where a UI's predictions come from: the model in-process, or the service over HTTP.

Both take JSON-encoded items and give one `Outcome` per item, so one bad item (or one
failing request) shows its own message while the others answer. Errors are readable
sentences for a person, never stack traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from proto2prod.errors import DefinitionError, InvalidInput, Proto2ProdError
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
        outcomes: list[Outcome | None] = [None] * len(items)
        good, tensors = [], []
        for i, item in enumerate(items):
            try:
                tensors.append(self.predictor.prepare(item))
                good.append(i)
            except InvalidInput as exc:
                outcomes[i] = Outcome(error=str(exc))
        if tensors:
            for i, output in zip(good, self.predictor.run(tensors), strict=True):
                outcomes[i] = Outcome(output=output, version=self.version)
        return [o for o in outcomes if o is not None]


class Remote:
    """A thin client of the service's `/predict` (decoupled): no torch, no registry here."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.source = self.url
        self.client: httpx.Client = httpx.Client(base_url=self.url, timeout=timeout)

    def metadata(self) -> dict[str, Any]:
        import httpx

        try:
            response = self.client.get("/metadata")
            response.raise_for_status()
            return dict(response.json())
        except httpx.HTTPError as exc:
            raise Proto2ProdError(
                f"cannot read {self.url}/metadata ({type(exc).__name__}); start the service "
                f"with: proto2prod serve NAME@ALIAS --port PORT"
            ) from None

    def _post(self, items: list[Any]) -> httpx.Response | str:
        import httpx

        try:
            return self.client.post("/predict", json={"inputs": items})
        except httpx.HTTPError as exc:
            return (
                f"The model service at {self.url} is not reachable ({type(exc).__name__}). "
                f"Is it running? Start it with: proto2prod serve NAME@ALIAS"
            )

    def predict(self, items: list[Any]) -> list[Outcome]:
        response = self._post(items)
        if isinstance(response, str):
            return [Outcome(error=response)] * len(items)
        if response.status_code == 200:
            body = response.json()
            version = response.headers.get("X-Model-Version", body.get("version"))
            return [Outcome(output=o, version=version) for o in body["outputs"]]
        if response.status_code in (400, 422) and len(items) > 1:
            return [outcome for item in items for outcome in self.predict([item])]
        return [Outcome(error=self._explain(response))] * len(items)

    def _explain(self, response: httpx.Response) -> str:
        try:
            message = str(response.json().get("message") or response.json().get("error"))
        except ValueError:
            message = response.reason_phrase
        if response.status_code < 500:
            return f"The service refused this input ({response.status_code}): {message}"
        return f"The service could not answer ({response.status_code}): {message}. Try again."


def in_process(
    definition_ref: str,
    *,
    model_ref: str | None,
    weights: Path | None = None,
    settings: Settings | None = None,
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
        local = fetch(Registry(settings or Settings.from_env()), ref)
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


def remote(url: str) -> tuple[Remote, UISpec]:
    from proto2prod.prototype.spec import UISpec

    backend = Remote(url)
    return backend, UISpec.from_metadata(backend.metadata())
