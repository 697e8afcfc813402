"""The service's OpenAPI document, exact: what a web app in any language generates its client
from (`proto2prod openapi REF` prints it without a service; the service serves it at
`/openapi.json` and `/docs.json`, which its Swagger UI reads).

BentoML's own document describes the `@bentoml.api` declaration only: OpenAPI 3.0, whose
schemas have no `contentEncoding`/`contentMediaType` (the Image field's), `/predict` with
200/400/404/500, and none of the routes beside it. This one is OpenAPI 3.1 (JSON Schema
2020-12, so the fields' schemas go in as they are), made from the definition's fields and
from the errors' own statuses (`proto2prod.errors`), so it cannot drift from what answers:
a test validates it with `openapi-spec-validator` and sends what it describes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proto2prod import __version__, errors

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from proto2prod.model import Model

OPENAPI_VERSION = "3.1.0"

E = errors
PREDICT_ERRORS: dict[int, tuple[str, tuple[type[errors.Proto2ProdError], ...]]] = {
    400: ('The body is not JSON, or not `{"inputs": [...]}`.', (E.InvalidJSON, E.InvalidRequest)),
    401: ("API keys are on and no valid key was sent.", (E.Unauthorized,)),
    403: ("The key lacks the `predict` scope.", (E.KeyForbidden,)),
    408: ("The body did not arrive within PROTO2PROD_BODY_TIMEOUT_S.", (E.RequestTimeout,)),
    413: ("The body or its number of items is over a limit.", (E.PayloadTooLarge, E.TooManyItems)),
    415: ("The body is not `application/json`.", (E.UnsupportedMediaType,)),
    422: ("An item does not fit its field: `index` and `field` name it.", (E.InvalidInput,)),
    429: ("PROTO2PROD_MAX_CONCURRENCY requests are in; wait `Retry-After`.", (E.TooManyRequests,)),
    500: (
        "The model failed, or gave an output that does not fit its field.",
        (E.ModelFailed, E.InvalidOutput, E.InternalError),
    ),
    503: (
        "Not ready (starting, draining) or overloaded; wait `Retry-After`.",
        (E.NotReady, E.Overloaded, E.DeviceUnavailable),
    ),
    504: ("No answer within PROTO2PROD_TIMEOUT_S.", (E.Timeout,)),
}
"""Every status `POST /predict` answers besides 200, with the errors that give it."""

RETRIED = (429, 503)
"""Statuses sent with `Retry-After`: the client should wait that long, then send again."""


def document(model: Model, *, server: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a service serving `model` (any version of it)."""
    predict_errors = {
        str(status): _error_response(description, kinds, status)
        for status, (description, kinds) in PREDICT_ERRORS.items()
    }
    key_errors = {k: predict_errors[k] for k in ("401", "403")}
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{model.title or model.name}: proto2prod model service",
            "version": __version__,
            "description": model.description or f"The `{model.name}` model, served by proto2prod.",
            "x-model": model.name,
        },
        "paths": {
            "/predict": {"post": _predict(model, predict_errors)},
            "/metadata": {"get": _metadata(key_errors, predict_errors["503"])},
            "/admin/reload": {"post": _admin_reload(key_errors, predict_errors["503"])},
            "/admin/registry-events": {"post": _registry_events(predict_errors)},
            "/livez": {"get": _probe("Live: the process answers.", "livez")},
            "/readyz": {"get": _probe("Ready: a version is loaded and not draining.", "readyz")},
            "/metrics": {"get": _metrics()},
        },
        "components": {
            "schemas": {
                "Item": model.inputs.json_schema(),
                "Output": model.outputs.json_schema(),
                "PredictRequest": _predict_request(),
                "PredictResponse": _predict_response(model),
                "Error": _error_schema(),
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`proto2prod keys create NAME`) or, for "
                    "/admin/reload, the admin token. Needed only where keys are on.",
                }
            },
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before sending the request again.",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "X-Model-Version": {
                    "description": "The registry version that answered.",
                    "schema": {"type": "string"},
                },
            },
        },
        # a key where keys are on, nothing where they are off
        "security": [{"bearer": []}, {}],
    }
    if model.generates:
        doc["paths"]["/generate"] = {"post": _generate(model, predict_errors)}
    if server:
        doc["servers"] = [{"url": server}]
    return doc


def _generate(model: Model, predict_errors: dict[str, Any]) -> dict[str, Any]:
    """A generative model's stream (service/generate.py): server-sent events."""
    return {
        "operationId": "generate",
        "summary": f"Generate with {model.name}: the text as server-sent events.",
        "description": 'Events: `chunk` (`{"text"}`) per token that adds text, then `done` '
        '(`{"finish_reason": "stop"|"length", "prompt_tokens", '
        '"completion_tokens", "text", "model", "version"}`), or `error` (the Error '
        "body) for a stream that fails or runs past PROTO2PROD_GENERATE_TIMEOUT_S.",
        "requestBody": {
            "required": True,
            "content": _json(
                {"type": "object", "properties": {"input": _ref("Item")}, "required": ["input"]}
            ),
        },
        "responses": {
            "200": {
                "description": "The text, event by event.",
                "headers": {"X-Model-Version": {"$ref": "#/components/headers/X-Model-Version"}},
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **predict_errors,
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_response(
    description: str, kinds: tuple[type[errors.Proto2ProdError], ...], status: int
) -> dict[str, Any]:
    names = [k.__name__ for k in kinds]
    answer: dict[str, Any] = {
        "description": f"{description} (`error`: {', '.join(names)})",
        "content": _json(_ref("Error")),
    }
    if status in RETRIED:
        answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    if status == 401:
        answer["headers"] = {
            "WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}
        }
    return answer


def _predict(model: Model, predict_errors: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": "predict",
        "summary": f"Predict with {model.name}: one output per item, in order.",
        "description": docstring(model),
        "parameters": [
            {
                "name": "X-Request-Key",
                "in": "header",
                "required": False,
                "description": "Keeps a client on one side of a canary rollout.",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {"required": True, "content": _json(_ref("PredictRequest"))},
        "responses": {
            "200": {
                "description": "The outputs, in the order of the items.",
                "headers": {"X-Model-Version": {"$ref": "#/components/headers/X-Model-Version"}},
                "content": _json(_ref("PredictResponse")),
            },
            **predict_errors,
        },
    }


def docstring(model: Model) -> str:
    """The definition's docstring (what an agent or a developer reads of the model)."""
    import inspect

    return inspect.getdoc(type(model)) or model.description or f"The {model.name} model."


def _predict_request() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"inputs": {"type": "array", "items": _ref("Item")}},
        "required": ["inputs"],
    }


def _predict_response(model: Model) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "outputs": {"type": "array", "items": _ref("Output")},
            "model": {"type": "string", "const": model.name},
            "version": {"type": "string"},
        },
        "required": ["outputs", "model", "version"],
    }


def _error_schema() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "description": "Every answer other than 2xx. `error` names the kind; `message` says "
        "what happened and how to fix it. A 422 adds `index` (the item), `field` (the field "
        "or the named part), `problem` and `expected`.",
        "properties": {
            "error": text,
            "message": text,
            "index": {"type": ["integer", "null"], "minimum": 0},
            "field": {"type": ["string", "null"]},
            "problem": text,
            "expected": text,
            "key": {"type": "string", "description": "The named input at fault (a 422)."},
        },
        "required": ["error", "message"],
    }


def _metadata(key_errors: dict[str, Any], not_ready: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": "metadata",
        "summary": "The version served, its fields, its registry state, rollout and drift.",
        "responses": {
            "200": {
                "description": "What is served; `inputs`/`outputs` are the fields' schemas.",
                "content": _json(
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "reference": {"type": "string"},
                            "alias": {"type": ["string", "null"]},
                            "version": {"type": ["string", "null"]},
                            "ready": {"type": "boolean"},
                            "inputs": {"type": "object"},
                            "outputs": {"type": "object"},
                        },
                        "required": ["name", "reference", "version", "ready"],
                    }
                ),
            },
            **key_errors,
            "503": not_ready,
        },
    }


def _admin_reload(key_errors: dict[str, Any], not_ready: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": "adminReload",
        "summary": "Check the registry now and swap to where the alias points.",
        "description": "Needs the admin token (PROTO2PROD_ADMIN_TOKEN) or an admin key; "
        "403 when neither is configured.",
        "responses": {
            "200": {"description": "What the check found.", "content": _json({"type": "object"})},
            **key_errors,
            "503": not_ready,
        },
    }


def _registry_events(predict_errors: dict[str, Any]) -> dict[str, Any]:
    accepted = {
        "description": "Seen; `accepted` says whether a check runs.",
        "content": _json({"type": "object"}),
    }
    error = _json(_ref("Error"))
    return {
        "operationId": "registryEvent",
        "summary": "An MLflow webhook delivery (signed with PROTO2PROD_WEBHOOK_SECRET).",
        "security": [{}],  # authenticated by its signature headers instead of a key
        "requestBody": {"required": True, "content": _json({"type": "object"})},
        "responses": {
            "200": accepted,
            "202": accepted,
            "400": predict_errors["400"],
            "401": {"description": "A missing or wrong signature.", "content": error},
            "403": {"description": "No webhook secret is configured.", "content": error},
            "413": predict_errors["413"],
            "503": predict_errors["503"],
        },
    }


def _probe(summary: str, name: str) -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "operationId": name,
        "summary": summary,
        "security": [{}],
        "responses": {
            "200": {"description": summary, "content": text},
            "503": {"description": "Not (yet, or any more).", "content": text},
        },
    }


def _metrics() -> dict[str, Any]:
    return {
        "operationId": "metrics",
        "summary": "Prometheus metrics: BentoML's and proto2prod's (requests, batches, swaps).",
        "security": [{}],
        "responses": {
            "200": {
                "description": "The text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }


class Documents:
    """ASGI layer answering `GET /openapi.json` and `/docs.json` (which BentoML's Swagger UI
    at `/` reads) with this document instead of BentoML's; everything else passes on."""

    PATHS = ("/openapi.json", "/docs.json")

    def __init__(self, app: ASGIApp, *, model: Callable[[], Model | None]) -> None:
        self.app = app
        self.model = model
        self.body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.PATHS or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self.body is None:
            model = self.model()
            if model is None:  # BentoML's arbiter has no definition; it never serves
                await self.app(scope, receive, send)
                return
            self.body = json.dumps(document(model), separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
