"""Where a UI's predictions come from: the model in-process, or the service over HTTP.

Both take JSON-encoded items and give one `Outcome` per item, so one bad item (or one
failing request) shows its own message while the others answer. Errors are readable
sentences for a person, never stack traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from proto2prod.errors import DefinitionError, InvalidInput, Proto2ProdError, ServiceUnreachable
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


class Remote:
    """A thin client of the service's `/predict` (decoupled): no torch, no registry here."""

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

    def metadata(self) -> dict[str, Any]:
        import httpx

        try:
            response = self.client.get("/metadata")
            if response.status_code in (401, 403):
                raise Proto2ProdError(
                    f"{self.url} wants an API key ({response.status_code}: "
                    f"{self._explain(response)}); set PROTO2PROD_API_KEY to a key from: "
                    f"proto2prod keys create NAME"
                )
            response.raise_for_status()
            return dict(response.json())
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(
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
        """One request for the batch. A 422 names the item at fault (`index`): that row
        gets the message and the others are sent again, so one bad upload fails only its
        own row, at one more request per bad item."""
        outcomes: dict[int, Outcome] = {}
        pending = list(range(len(items)))
        while pending:
            response = self._post([items[i] for i in pending])
            if isinstance(response, str):
                outcomes.update((i, Outcome(error=response)) for i in pending)
                break
            if response.status_code == 200:
                body = response.json()
                version = response.headers.get("X-Model-Version", body.get("version"))
                outputs = body["outputs"]
                outcomes.update(
                    (i, Outcome(output=o, version=version))
                    for i, o in zip(pending, outputs, strict=True)
                )
                break
            bad = _bad_index(response, len(pending))
            if bad is None:  # not about one item: every row says why
                outcomes.update((i, Outcome(error=self._explain(response))) for i in pending)
                break
            outcomes[pending.pop(bad)] = Outcome(error=self._explain(response))
        return [outcomes[i] for i in range(len(items))]

    def _explain(self, response: httpx.Response) -> str:
        try:
            message = str(response.json().get("message") or response.json().get("error"))
        except ValueError:
            message = response.reason_phrase
        if response.status_code < 500:
            return f"The service refused this input ({response.status_code}): {message}"
        return f"The service could not answer ({response.status_code}): {message}. Try again."


def _bad_index(response: httpx.Response, sent: int) -> int | None:
    """The index a 422 names (the service's InvalidInput body), if it is one of `sent`."""
    if response.status_code != 422:
        return None
    try:
        index = response.json().get("index")
    except ValueError:
        return None
    return index if isinstance(index, int) and 0 <= index < sent else None


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

    from proto2prod.prototype.spec import UISpec

    backend = Remote(url, api_key=api_key or os.environ.get("PROTO2PROD_API_KEY") or None)
    return backend, UISpec.from_metadata(backend.metadata())
