"""The proto2prod model service: `bentoml serve service.app:ModelService`.

Everything comes from the environment, read once by `Settings` and `ServiceSettings`
(`proto2prod serve NAME@ALIAS` sets it). The request and response models are generated
from the model's fields, so `/docs` shows the real schema.

Routes: `POST /predict` (`{"inputs": [item, ...]}` -> `{"outputs": [...], "model",
"version"}` plus an `X-Model-Version` header), `GET /metadata`, `POST /admin/reload`
(bearer token), and BentoML's `/livez`, `/readyz`, `/metrics`, `/docs`.

No `from __future__ import annotations` here: BentoML reads the real types of `predict`.
"""

import asyncio
import contextlib
import gc
import hmac
import importlib.util
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Annotated, Any, cast

import bentoml
from pydantic import BaseModel, WithJsonSchema
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proto2prod.definition import Definition
from proto2prod.errors import (
    AdminDisabled,
    CacheUnavailable,
    InvalidInput,
    NotReady,
    Overloaded,
    RegistryUnavailable,
    Timeout,
    TooManyItems,
    Unauthorized,
)
from proto2prod.registry import ModelRef, Registry
from proto2prod.service.batcher import MicroBatcher
from proto2prod.service.http import Answer, BodyLimit, error_response
from proto2prod.service.predict import Limits, PredictEndpoint
from proto2prod.service.runtime import ModelRuntime, find_definition
from proto2prod.settings import ServiceSettings, Settings
from proto2prod.startup import configure_process

log = logging.getLogger("proto2prod.service")
if not logging.getLogger("proto2prod").handlers:  # BentoML configures only its own loggers
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] [%(name)s] %(message)s"))
    logging.getLogger("proto2prod").addHandler(_handler)
    logging.getLogger("proto2prod").setLevel(logging.INFO)


def _environment() -> dict[str, str]:
    """The process environment over the defaults a Bento carries.

    `proto2prod build` records the reference and the definition as the Bento's arguments,
    which BentoML restores wherever it loads the Bento, so `bentoml serve TAG` needs no
    environment (a container gets them as ENV as well); the environment still wins.
    """
    args = vars(bentoml.use_arguments())
    defaults = {
        "PROTO2PROD_MODEL": args.get("model"),
        "PROTO2PROD_DEFINITION": args.get("definition"),
    }
    return {**{k: str(v) for k, v in defaults.items() if v}, **os.environ}


ENVIRON = _environment()
SETTINGS = Settings.from_env(ENVIRON)
CONFIG = ServiceSettings.from_env(ENVIRON)
configure_process(SETTINGS, serving=True)  # this process is ours: set it up once
MODEL_NAME = ModelRef.parse(CONFIG.model).name

# BentoML imports this module twice: in its arbiter, for the service's configuration, and
# in each worker, which serves. Only a worker loads the definition (torch, the registry
# client, MLflow): the arbiter stays a small process (`proto2prod serve` has checked the
# definition before starting BentoML, so a bad one is a one-line error there).
IN_WORKER = bentoml.server_context.worker_index is not None
REGISTRY = Registry(SETTINGS)
DEFINITION: Definition | None = None
schemas: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
if IN_WORKER:
    DEFINITION = find_definition(CONFIG, REGISTRY, ModelRef.parse(CONFIG.model))
    schemas = (DEFINITION.model.inputs.json_schema(), DEFINITION.model.outputs.json_schema())

Item = Annotated[Any, WithJsonSchema(schemas[0])]
Output = Annotated[Any, WithJsonSchema(schemas[1])]


class PredictResponse(BaseModel):
    outputs: list[Output]
    model: str
    version: str


BATCH_SIZE = bentoml.metrics.Histogram(
    name="proto2prod_batch_size",
    documentation="Items per forward pass",
    labelnames=["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
REQUESTS = bentoml.metrics.Counter(
    name="proto2prod_requests",
    documentation="Prediction requests by model version and HTTP status",
    labelnames=["model", "version", "status"],
)

_service: "ModelService | None" = None  # the instance, for the plain Starlette routes


async def metadata(_: Request) -> JSONResponse:
    if _service is None:
        return error_response(NotReady("the service is starting"))
    return JSONResponse({**_service.runtime.metadata(), "server": _service.server})


async def admin_reload(request: Request) -> JSONResponse:
    token = CONFIG.admin_token
    if token is None:
        return error_response(AdminDisabled("set PROTO2PROD_ADMIN_TOKEN to enable /admin/reload"))
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # compare_digest either way: how long the check takes says nothing about the token
    if not hmac.compare_digest(given.strip().encode(), token.encode()) or scheme != "Bearer":
        return error_response(Unauthorized("send Authorization: Bearer <admin token>"))
    if _service is None:
        return error_response(NotReady("the service is starting"))
    try:
        result = await asyncio.to_thread(_service.runtime.check, retry_refused=True)
    except (RegistryUnavailable, CacheUnavailable) as exc:
        return error_response(exc)
    return JSONResponse(result)


def server_stack(loop: asyncio.AbstractEventLoop) -> dict[str, str]:
    """The event loop and HTTP parser serving us. uvicorn takes uvloop and httptools when
    they are installed (the `serve` extra) and falls back to asyncio and h11, which cost
    about a third of the throughput on a small model: say which one runs."""
    return {
        "loop": "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",  # uvicorn's rule
    }


routes = Starlette(
    routes=[
        Route("/metadata", metadata, methods=["GET"]),
        Route("/admin/reload", admin_reload, methods=["POST"]),
    ]
)


@bentoml.asgi_app(routes, path="/")
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
        global _service
        assert DEFINITION is not None, "the service is instantiated in BentoML's workers only"
        worker = bentoml.server_context.worker_index or 1
        self.runtime = ModelRuntime(SETTINGS, CONFIG, DEFINITION, REGISTRY, worker=worker)
        self.batcher: MicroBatcher[Any] = MicroBatcher(
            lambda predictor, tensors: predictor.run(tensors),
            max_batch_size=CONFIG.max_batch_size,
            wait_ms=CONFIG.batch_wait_ms,
            max_queue=CONFIG.max_queue,
            on_batch=self._record_batch,
        )
        # Validation and preprocessing of large requests, off the event loop: two threads,
        # since both hold the GIL most of the time (more would only queue for it).
        self._preparers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")
        self._tasks: list[asyncio.Task[None]] = []
        self.draining = False
        self.server: dict[str, str] = {}
        _service = self

    def _record_batch(self, predictor: Any, size: int) -> None:
        current = self.runtime.current
        version = current.version if current and current.predictor is predictor else "old"
        BATCH_SIZE.labels(model=MODEL_NAME, version=version).observe(size)

    @bentoml.on_startup
    async def start_polling(self) -> None:
        self.server = server_stack(asyncio.get_running_loop())
        log.info("HTTP: uvicorn on %s + %s", self.server["loop"], self.server["http"])
        self._tasks.append(asyncio.create_task(self._poll(), name="proto2prod-poller"))
        self._drain_on_sigterm(asyncio.get_running_loop())

    def _drain_on_sigterm(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM: `/readyz` turns 503 at once, requests are still served for `drain_s`,
        then the server's own handler stops listening and lets in-flight requests finish.

        Why: a load balancer polls readiness; a server that stops listening before it is
        marked unready gets connections refused in between (Kubernetes' rolling updates).
        """
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread; nothing to wrap here
        server_handler = signal.getsignal(signal.SIGTERM)

        def stop(sig: int, frame: FrameType | None) -> None:
            if callable(server_handler):
                server_handler(sig, frame)
            else:  # no server handler: the default action, now
                signal.signal(signal.SIGTERM, server_handler)
                os.kill(os.getpid(), signal.SIGTERM)

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            # BentoML's arbiter relays its SIGTERM, and a process-group kill sends one
            # more: draining already, ignore them (Ctrl-C/SIGINT still stops at once).
            if self.draining:
                return
            self.draining = True
            log.info("SIGTERM: not ready; serving %.1f s more, then stopping", CONFIG.drain_s)
            loop.call_later(CONFIG.drain_s, stop, sig, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    async def _poll(self) -> None:
        """Load, then follow the alias, forever: no failure ends this task. Each is logged
        in one line with its reason (a traceback only for what is our own bug), counted in
        /metadata, and retried with back-off; a failed start-up is retried by the checks."""
        await self._guarded(self.runtime.start, "start-up")
        # Start-up leaves a million long-lived objects (torch, MLflow, pydantic, BentoML); a
        # full collection walks them all and stalls every request in flight for hundreds of
        # ms. Frozen, they are never scanned again.
        # Per-request garbage is young and short-lived: collect it in larger, rarer sweeps
        # (measured on digits at 32 users: p99 400 -> 54 ms, max 643 -> 86 ms).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        while True:
            await asyncio.sleep(self.runtime.next_poll_in())
            await self._guarded(self.runtime.check, "registry check")

    async def _guarded(self, step: Callable[[], object], what: str) -> None:
        try:
            await asyncio.to_thread(step)
        except (RegistryUnavailable, CacheUnavailable) as exc:  # counted by the runtime
            log.warning("%s failed (%d in a row; next in %.0f s): %s", what,
                        self.runtime.failures, self.runtime.next_poll_in(), exc)  # fmt: skip
        except Exception as exc:  # our own bug, or the user's definition: keep going
            self.runtime.failures += 1
            self.runtime.last_error = f"{type(exc).__name__}: {exc}"
            if self.runtime.current is None:
                self.runtime.not_ready_reason = f"{what} failed: {self.runtime.last_error}"
            log.exception("%s failed (%d in a row); retrying", what, self.runtime.failures)

    @bentoml.on_shutdown
    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.batcher.close()
        self._preparers.shutdown(wait=False, cancel_futures=True)

    async def __is_ready__(self) -> bool:
        return self.runtime.ready and not self.draining

    @bentoml.api(route="/predict")
    async def predict(self, inputs: list[Item]) -> PredictResponse:
        """Predict a list of inputs; outputs come back in the same order."""
        # The declaration gives /docs the fields' schema and BentoML's clients the route;
        # `PredictEndpoint` answers POST /predict before BentoML's dispatch is reached.
        loop = asyncio.get_running_loop()
        answer = await self.answer(inputs, loop.time() + CONFIG.timeout_s, False)
        return JSONResponse(answer.body, answer.status, headers=answer.headers)  # type: ignore[return-value]

    async def answer(self, inputs: list[Any], deadline: float, small: bool) -> Answer:
        """Validate, preprocess and batch `inputs` on the current version, by `deadline`.

        `small` requests are prepared on the event loop (cheaper than a thread hop); others
        in the preparation threads, which stop between items once the deadline has passed,
        so no request can stall the event loop or outlive its timeout by much.
        """
        loaded = self.runtime.current  # this request stays on this version
        if loaded is None:
            reason = self.runtime.not_ready_reason or "no model loaded yet"
            return self._count(Answer.of(NotReady(reason)), "none")
        version = loaded.version
        if not inputs:
            empty = InvalidInput("inputs", "the list is empty", "at least one item")
            return self._count(Answer.of(empty), version)
        if len(inputs) > CONFIG.max_items:
            return self._count(Answer.of(TooManyItems(
                f"{len(inputs)} items in one request; the limit is {CONFIG.max_items} "
                f"(PROTO2PROD_MAX_ITEMS): send them in several requests",
                field="inputs", index=None,
            )), version)  # fmt: skip
        loop = asyncio.get_running_loop()
        try:
            if small:
                tensors = [loaded.predictor.prepare(item, i) for i, item in enumerate(inputs)]
            else:
                tensors = await self._prepare_off_loop(loaded.predictor, inputs, deadline)
            outputs = await asyncio.wait_for(
                self.batcher.submit(loaded.predictor, tensors), deadline - loop.time()
            )
        except (InvalidInput, Overloaded) as exc:
            return self._count(Answer.of(exc), version)
        except TimeoutError:
            return self._count(Answer.of(Timeout(
                f"the request was not answered within {CONFIG.timeout_s:g} s "
                "(PROTO2PROD_TIMEOUT_S)"
            )), version)  # fmt: skip
        body = {"outputs": outputs, "model": MODEL_NAME, "version": version}
        return self._count(Answer(200, body, {"X-Model-Version": version}), version)

    async def _prepare_off_loop(self, predictor: Any, inputs: list[Any], deadline: float) -> list:
        loop = asyncio.get_running_loop()
        given_up = threading.Event()

        def prepare() -> list[Any]:
            tensors = []
            for i, item in enumerate(inputs):
                if given_up.is_set():  # the request timed out: stop spending CPU on it
                    return []
                tensors.append(predictor.prepare(item, i))
            return tensors

        work = loop.run_in_executor(self._preparers, prepare)
        try:
            return await asyncio.wait_for(work, deadline - loop.time())
        finally:
            given_up.set()

    @staticmethod
    def _count(answer: Answer, version: str) -> Answer:
        with contextlib.suppress(Exception):  # metrics must never fail a request
            REQUESTS.labels(model=MODEL_NAME, version=version, status=answer.status).inc()
        return answer


# Listed first = outermost: an oversized or non-JSON body is refused before it is read.
SERVICE = cast("bentoml.Service[ModelService]", ModelService)  # what the decorators made it
SERVICE.add_asgi_middleware(
    BodyLimit, max_bytes=int(CONFIG.max_body_mb * 1024 * 1024), json_paths=("/predict",)
)
SERVICE.add_asgi_middleware(
    PredictEndpoint,
    answerer=lambda: _service.answer if _service is not None else None,
    limits=Limits(
        max_concurrency=CONFIG.max_concurrency,
        max_inflight_bytes=int(CONFIG.max_inflight_mb * 1024 * 1024),
        body_timeout_s=CONFIG.body_timeout_s,
        timeout_s=CONFIG.timeout_s,
    ),
)
