"""The proto2prod model service: `bentoml serve proto2prod.service.app:ModelService`.

This module is what BentoML's import contract needs and no more: the parts, made once per
process from the environment (service/parts.py; `proto2prod serve NAME@ALIAS` sets it),
because `@bentoml.service(...)` reads its options at import; the service class, which
builds the rest from those parts when BentoML instantiates it in a worker; the ASGI layers
in front of it. docs/architecture.md draws the parts and a request's path through them.

Routes: `POST /predict` (`{"inputs": [item, ...]}` -> `{"outputs": [...], "model",
"version"}` plus an `X-Model-Version` header; answered by service/predict.py ahead of
BentoML's dispatch), `POST /generate` (a generative model's text as server-sent events,
service/generate.py), `/mcp` (the model as an MCP tool, service/mcp_tool.py), `GET
/openapi.json` (service/openapi.py), `GET /metadata` and `POST /admin/*`
(service/routes.py), and BentoML's `/livez`, `/readyz`, `/metrics`, `/docs`.

No `from __future__ import annotations` here: BentoML reads the real types of `predict`.
"""

import asyncio
import logging
from http import HTTPStatus
from importlib.util import find_spec
from typing import Annotated, Any, cast

import bentoml
from pydantic import BaseModel, WithJsonSchema

from proto2prod.service.config import environment
from proto2prod.service.generate import GenerateEndpoint
from proto2prod.service.guard import AdminBodies, Unexpected
from proto2prod.service.http import Answer, BodyLimit
from proto2prod.service.layers import ours_outermost
from proto2prod.service.mcp_tool import McpEndpoint, McpSessions, ModelTool
from proto2prod.service.openapi import Documents
from proto2prod.service.parts import Parts, assemble
from proto2prod.service.predict import Answerer, BodyReader, Limits, PredictEndpoint, RequestInfo
from proto2prod.service.routes import routes
from proto2prod.service.serving import Current, Serving

log = logging.getLogger("proto2prod.service")

PARTS: Parts = assemble(environment(), in_worker=bentoml.server_context.worker_index is not None)
CONFIG = PARTS.config
_inputs_schema, _outputs_schema = PARTS.schemas()
# The same schemas the fields validate with (the definition's), so /docs cannot drift from
# what answers; tests/test_service.py compares them.
Item = Annotated[Any, WithJsonSchema(_inputs_schema)]
Output = Annotated[Any, WithJsonSchema(_outputs_schema)]


class PredictResponse(BaseModel):
    outputs: list[Output]
    model: str
    version: str


class Refusal(bentoml.exceptions.BentoMLException):
    """An answer other than 200, for a direct call of the `predict` declaration."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(str(answer.body.get("message")), error_code=HTTPStatus(answer.status))


@bentoml.asgi_app(
    routes(lambda: Current.serving, CONFIG.admin_token, CONFIG.webhook_secret, PARTS.keys),
    path="/",
)
@bentoml.service(
    name="proto2prod",
    # No `max_concurrency` here: BentoML's answers 429 without Retry-After; ours does
    # (service/predict.py), and counts only requests whose bodies have arrived.
    traffic={"timeout": CONFIG.timeout_s + 5},
    workers=CONFIG.workers,
    # Every GPU visible to every worker (BentoML sets CUDA_VISIBLE_DEVICES from this); each
    # worker then takes its own (proto2prod.predictor.pick_device).
    resources={"gpu": max(1, CONFIG.gpu_count)} if CONFIG.wants_gpu else {},
    logging={"access": {"enabled": CONFIG.access_log}},
    # The OpenTelemetry middleware makes a span per request even at sample rate 0.
    tracing={"sample_rate": 0.0, "excluded_urls": ["/predict", "/metadata", "/livez", "/readyz"]},
)
class ModelService:
    """Serves one model reference from the registry; follows its alias live."""

    def __init__(self) -> None:
        self.serving = Serving(PARTS, worker=bentoml.server_context.worker_index or 1)
        Current.serving = self.serving

    @bentoml.on_startup
    async def start(self) -> None:
        self.serving.start()

    @bentoml.on_shutdown
    async def stop(self) -> None:
        await MCP.stop()
        await self.serving.stop()

    async def __is_ready__(self) -> bool:
        return self.serving.runtime.ready and not self.serving.draining

    @bentoml.api(route="/predict")
    async def predict(self, inputs: list[Item]) -> PredictResponse:
        """Predict a list of inputs; outputs come back in the same order.

        Over HTTP, `PredictEndpoint` answers POST /predict ahead of BentoML's dispatch, on
        the same `Answering` path; this declaration gives `/docs` and BentoML's clients the
        route and its schemas, and answers the same way when called directly.
        """
        deadline = asyncio.get_running_loop().time() + CONFIG.timeout_s
        answer = await self.serving.answering.answer(inputs, deadline, RequestInfo(small=False))
        if answer.status != 200:
            raise Refusal(answer)
        return PredictResponse(**answer.body)


def _tool() -> ModelTool | None:
    """The model's MCP tool, answered on the same path as /predict (None in the arbiter)."""
    if PARTS.definition is None or Current.serving is None or not find_spec("mcp"):
        return None  # /mcp then answers 404
    return ModelTool(PARTS.definition.model, _answerer, CONFIG.timeout_s)


def _answerer() -> Answerer | None:
    return Current.serving.answering.answer if Current.serving is not None else None


MCP = McpSessions(_tool)

# Listed first = outermost: no error escapes without an answer; an oversized or non-JSON
# body is refused before it is read; /predict is answered; /admin/* bodies are bounded (the
# two share one body budget).
SERVICE = cast("bentoml.Service[ModelService]", ModelService)  # what the decorators made it
BODIES = BodyReader(
    Limits(
        max_concurrency=CONFIG.max_concurrency,
        max_inflight_bytes=int(CONFIG.max_inflight_mb * 1024 * 1024),
        body_timeout_s=CONFIG.body_timeout_s,
        timeout_s=CONFIG.timeout_s,
    )
)
SERVICE.add_asgi_middleware(Unexpected)
SERVICE.add_asgi_middleware(
    BodyLimit,
    max_bytes=int(CONFIG.max_body_mb * 1024 * 1024),
    json_paths=("/predict", "/generate"),
)
SERVICE.add_asgi_middleware(
    PredictEndpoint,
    answerer=_answerer,
    authorize=lambda header: PARTS.keys.check(header, "predict"),
    reader=BODIES,
)
SERVICE.add_asgi_middleware(  # a generative model's text as server-sent events
    GenerateEndpoint,
    answering=lambda: Current.serving.answering if Current.serving is not None else None,
    authorize=lambda header: PARTS.keys.check(header, "predict"),
    reader=BODIES,
    timeout_s=CONFIG.generate_timeout_s,
)
SERVICE.add_asgi_middleware(
    McpEndpoint, sessions=MCP, authorize=lambda header: PARTS.keys.check(header, "predict")
)
SERVICE.add_asgi_middleware(  # /openapi.json and /docs.json: the exact document
    Documents, model=lambda: PARTS.definition.model if PARTS.definition else None
)
SERVICE.add_asgi_middleware(AdminBodies, reader=BODIES)  # inside: /predict never passes it
# ... and all of ours outside BentoML's per-request layers (service/layers.py)
ours_outermost(
    (Unexpected, BodyLimit, PredictEndpoint, GenerateEndpoint, McpEndpoint, Documents, AdminBodies)
)
