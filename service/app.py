"""The proto2prod model service: `bentoml serve proto2prod.service.app:ModelService`.

Configuration comes from the environment (service/config.py; `proto2prod serve NAME@ALIAS`
sets it). The request and response models are generated from the model's fields, so
`/docs` shows the real schema.

Routes: `POST /predict` (`{"inputs": [item, ...]}` -> `{"outputs": [...], "model",
"version"}` plus an `X-Model-Version` header; served by service/predict.py ahead of
BentoML's dispatch), `GET /metadata` and `POST /admin/reload` (service/routes.py), and
BentoML's `/livez`, `/readyz`, `/metrics`, `/docs`.

No `from __future__ import annotations` here: BentoML reads the real types of `predict`.
"""

import asyncio
import functools
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, NoReturn, cast

import bentoml
from pydantic import BaseModel, WithJsonSchema
from starlette.responses import JSONResponse

from proto2prod.definition import Definition
from proto2prod.errors import (
    InvalidInput,
    ModelFailed,
    NotReady,
    Overloaded,
    SettingsError,
    Timeout,
    TooManyItems,
)
from proto2prod.registry import ModelRef, Registry
from proto2prod.registry.rollouts import RolloutRun
from proto2prod.service import drift, exposure, lifecycle, metrics
from proto2prod.service.batcher import MicroBatcher
from proto2prod.service.checks import RegistryChecks
from proto2prod.service.config import CONFIG, MODEL_NAME, SETTINGS
from proto2prod.service.drift import DriftTracker
from proto2prod.service.fanout import Bus
from proto2prod.service.guard import AdminBodies, Unexpected
from proto2prod.service.http import Answer, BodyLimit
from proto2prod.service.keys import KeyStore
from proto2prod.service.predict import BodyReader, Limits, PredictEndpoint, RequestInfo
from proto2prod.service.rollout import Rollout
from proto2prod.service.routes import routes
from proto2prod.service.runtime import Loaded, ModelRuntime, find_definition
from proto2prod.startup import configure_process

log = logging.getLogger("proto2prod.service")
configure_process(SETTINGS, serving=True)  # this process is ours: set it up once

# BentoML imports this module twice: in its arbiter, for the service's configuration, and
# in each worker, which serves. Only a worker loads the definition (torch, the registry
# client, MLflow): the arbiter stays a small process (`proto2prod serve` has checked the
# definition before starting BentoML, so a bad one is a one-line error there).
IN_WORKER = bentoml.server_context.worker_index is not None
REGISTRY = Registry(SETTINGS)
KEYS = KeyStore(SETTINGS.keys_file, required=SETTINGS.keys_required)


def _refuse(error: SettingsError) -> NoReturn:
    """One line and exit 2: in the arbiter before anything listens; in a worker (a host the
    arbiter could not see), the arbiter is stopped too, so the service does not listen."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    if IN_WORKER:
        log.error("%s", error)
        os.kill(os.getppid(), signal.SIGTERM)
    os._exit(2)  # BentoML would print a traceback around a SystemExit raised from here


try:  # fail closed: the keys file and where the service listens, before anything serves
    KEYS.start(watch=IN_WORKER)
    _hosts = exposure.worker_hosts() if IN_WORKER else [h for h in [exposure.arbiter_host()] if h]
    exposure.check(_hosts, keys_enabled=KEYS.enabled, no_auth=CONFIG.no_auth, keys_file=KEYS.path)
except SettingsError as _error:
    _refuse(_error)
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


_service: "ModelService | None" = None  # the instance, for the plain Starlette routes


@bentoml.asgi_app(
    routes(lambda: _service, CONFIG.admin_token, CONFIG.webhook_secret, KEYS), path="/"
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
        self.worker = worker
        self.bus = Bus()  # what one worker learns, the others act on (service/fanout.py)
        self.rollout: Rollout | None = None
        if CONFIG.challenger:
            self.rollout = Rollout(
                SETTINGS,
                CONFIG,
                DEFINITION,
                REGISTRY,
                self.runtime,
                self.batcher,
                worker=worker,
                secret=self.bus.secret(),
            )
            self.rollout.on_rollback = lambda pair, reason: self.bus.publish(
                "canary-rollback", pair=list(pair), reason=reason, worker=worker
            )
        self.checks = RegistryChecks(self.runtimes)  # coalesced, off the request path
        # Validation and preprocessing of large requests, off the event loop: two threads,
        # since both hold the GIL most of the time (more would only queue for it).
        self._preparers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")
        self._tasks: list[asyncio.Task[None]] = []
        self.draining = False
        self.server: dict[str, str] = {}
        self.drift: DriftTracker | None = None
        self.drift_note = "off (PROTO2PROD_DRIFT=0)" if not CONFIG.drift else "no answers yet"
        _service = self

    def _record_batch(self, predictor: Any, size: int, seconds: float) -> None:
        if self.rollout is not None:
            self.rollout.on_batch(predictor, size, seconds)
        current = self.runtime.current
        if current and current.predictor is predictor:
            version = current.version
        else:  # the challenger's, or a version swapped out while its batch ran
            other = self.rollout.runtime.current if self.rollout else None
            version = other.version if other and other.predictor is predictor else "old"
        metrics.record_batch(MODEL_NAME, version, size)

    def runtimes(self) -> dict[str, ModelRuntime]:
        """Each alias the service follows and its runtime (the webhook's targets)."""
        followed = {self.runtime.ref.alias or "": self.runtime}
        if self.rollout is not None:
            followed[self.rollout.alias] = self.rollout.runtime
        return followed

    @bentoml.on_startup
    async def start_polling(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = lifecycle.server_stack(loop)
        log.info("HTTP: uvicorn on %s + %s", self.server["loop"], self.server["http"])
        self._tasks.append(asyncio.create_task(self._poll(), name="proto2prod-poller"))
        if self.rollout is not None:
            log_task = asyncio.create_task(self.rollout.log_forever(), name="proto2prod-rollout")
            self._tasks.append(log_task)
        if CONFIG.drift:
            tracking = drift.track(lambda: self.drift, self._export_drift, self._log_drift)
            self._tasks.append(asyncio.create_task(tracking, name="proto2prod-drift"))
        listening = self.bus.listen(self._on_event)
        self._tasks.append(asyncio.create_task(listening, name="proto2prod-fanout"))
        lifecycle.drain_on_sigterm(loop, CONFIG.drain_s, self._start_draining)

    def _start_draining(self) -> bool:
        """`/readyz` says 503 from now on; False if it already did."""
        if self.draining:
            return False
        self.draining = True
        return True

    async def _poll(self) -> None:
        """Load, then follow the alias, forever: no failure ends this task. Each is logged
        in one line with its reason (a traceback only for what is our own bug), counted in
        /metadata, and retried with back-off; a failed start-up is retried by the checks."""
        await self.checks.guarded(self.runtime, self.runtime.start, "start-up")
        if self.rollout is not None:
            challenger = self.rollout.runtime
            await self.checks.guarded(challenger, challenger.start, f"{self.rollout.kind} start-up")
        lifecycle.settle_garbage_collector()
        while True:
            await asyncio.sleep(self.runtime.next_poll_in())
            for alias in self.runtimes():
                task = self.checks.schedule(alias, f"registry check of {alias or 'it'}")
                if task is not None:
                    await asyncio.shield(task)

    async def check_now(self, alias: str) -> None:
        """A registry event says `alias` moved: the poll's check, at once (webhooks), here
        and in every other worker of the service."""
        if alias in self.runtimes():
            self.bus.publish("check", alias=alias, worker=self.worker)
            self.checks.schedule(alias, f"registry event for {alias}")

    async def reload(self) -> dict[str, Any]:
        """`/admin/reload`: check now, retrying a refused version, in every worker."""
        self.bus.publish("reload", worker=self.worker)
        return dict(
            await self.checks.run(functools.partial(self.runtime.check, retry_refused=True))
        )

    async def _on_event(self, event: dict[str, Any]) -> None:
        """Another worker's news (service/fanout.py): act on it as if it came here."""
        kind, worker = event.get("kind"), event.get("worker")
        if kind == "check":
            self.checks.schedule(str(event.get("alias")), f"registry event (from worker {worker})")
        elif kind == "reload":
            step = functools.partial(self.runtime.check, retry_refused=True)
            await self.checks.guarded(self.runtime, step, f"forced reload (from worker {worker})")
        elif kind == "canary-rollback" and self.rollout is not None:
            pair = event.get("pair") or []
            if len(pair) == 2:
                self.rollout.rolled_back_elsewhere(
                    (str(pair[0]), str(pair[1])), str(event.get("reason")), worker
                )

    @bentoml.on_shutdown
    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.batcher.close()
        self._preparers.shutdown(wait=False, cancel_futures=True)
        self.checks.close()

    async def __is_ready__(self) -> bool:
        return self.runtime.ready and not self.draining

    @bentoml.api(route="/predict")
    async def predict(self, inputs: list[Item]) -> PredictResponse:
        """Predict a list of inputs; outputs come back in the same order."""
        # The declaration gives /docs the fields' schema and BentoML's clients the route;
        # `PredictEndpoint` answers POST /predict before BentoML's dispatch is reached.
        loop = asyncio.get_running_loop()
        answer = await self.answer(inputs, loop.time() + CONFIG.timeout_s, RequestInfo(small=False))
        return JSONResponse(answer.body, answer.status, headers=answer.headers)  # type: ignore[return-value]

    async def answer(self, inputs: list[Any], deadline: float, info: RequestInfo) -> Answer:
        """Validate, preprocess and batch `inputs` on the current version, by `deadline`.

        `info.small` requests are prepared on the event loop (cheaper than a thread hop);
        others in the preparation threads, which stop between items once the deadline has
        passed, so no request can stall the event loop or outlive its timeout by much.
        `info.key` (the `X-Request-Key` header) keeps a client on one side of a canary.
        """
        small = info.small
        loaded = self.runtime.current  # this request stays on this version
        if loaded is None:
            reason = self.runtime.not_ready_reason or "no model loaded yet"
            return self._count(Answer.of(NotReady(reason)), "none")
        if self.rollout is None:
            answer, prepared = await self._answer_on(loaded, inputs, deadline, small)
            self._observe(loaded, inputs, prepared, answer)
            return self._count(answer, loaded.version)
        loaded, canary = self.rollout.pick(loaded, info.key)
        started = time.perf_counter()
        answer, prepared = await self._answer_on(loaded, inputs, deadline, small)
        elapsed = time.perf_counter() - started
        self.rollout.answered(loaded, canary, elapsed, answer, prepared, info)
        if not canary:
            self._observe(loaded, inputs, prepared, answer)
        return self._count(answer, loaded.version)

    # -- drift ----------------------------------------------------------------------------
    def _observe(
        self, loaded: Loaded, inputs: list[Any], prepared: list[Any], answer: Answer
    ) -> None:
        """Queue an answered request for the drift check (O(1); measured off the loop)."""
        if answer.status != 200 or not CONFIG.drift:
            return
        tracker = self.drift
        if tracker is None or tracker.version != loaded.version:
            if loaded.reference is None:
                self.drift, self.drift_note = (
                    None,
                    (
                        f"version {loaded.version} was published without reference statistics "
                        f"(before proto2prod recorded them): publish it again to check drift"
                    ),
                )
                return
            tracker = self.drift = DriftTracker(
                self.runtime.definition.model, loaded.version, loaded.reference, CONFIG.drift_window
            )
        tracker.observe(inputs, prepared, answer.body["outputs"])

    def drift_report(self) -> dict[str, Any]:
        tracker = self.drift
        if tracker is None:
            return {"enabled": CONFIG.drift, "note": self.drift_note}
        return {"enabled": True, **tracker.report()}

    @staticmethod
    def _export_drift(tracker: DriftTracker, report: dict[str, Any]) -> None:
        psi = {name: found["psi"] for name, found in report["statistics"].items()}
        metrics.export_drift(MODEL_NAME, tracker.version, psi)
        metrics.forget_dead_workers()

    @staticmethod
    def _log_drift(tracker: DriftTracker, report: dict[str, Any]) -> None:
        """Once per window: PSI and KS per statistic, on one MLflow run per version."""
        run = tracker.run
        if run is None:
            run = tracker.run = RolloutRun(
                REGISTRY, MODEL_NAME, "drift", tracker.version, "reference"
            )
        found = report["statistics"].items()
        run.log(
            {
                **{f"psi/{name}": s["psi"] for name, s in found},
                **{f"ks_p/{name}": s["ks_p"] for name, s in found},
            }
        )

    async def _answer_on(
        self, loaded: Loaded, inputs: list[Any], deadline: float, small: bool
    ) -> tuple[Answer, list[Any]]:
        """The answer of `loaded` to `inputs`, and the prepared items (a shadow reuses them)."""
        version = loaded.version
        if not inputs:
            return Answer.of(InvalidInput("inputs", "the list is empty", "at least one item")), []
        if len(inputs) > CONFIG.max_items:
            return Answer.of(
                TooManyItems(
                    f"{len(inputs)} items in one request; the limit is {CONFIG.max_items} "
                    f"(PROTO2PROD_MAX_ITEMS): send them in several requests",
                    field="inputs",
                    index=None,
                )
            ), []
        loop = asyncio.get_running_loop()
        prepared: list[Any] = []
        try:
            if small:
                prepared = loaded.predictor.prepare_each(inputs)
            else:
                prepared = await self._prepare_off_loop(loaded.predictor, inputs, deadline)
            for problem in prepared:
                if isinstance(problem, InvalidInput):
                    raise problem  # the request is refused whole, naming its first bad item
            outputs = await asyncio.wait_for(
                self.batcher.submit(loaded.predictor, prepared), deadline - loop.time()
            )
        except (InvalidInput, Overloaded) as exc:
            return Answer.of(exc), prepared
        except TimeoutError:
            return Answer.of(
                Timeout(
                    f"the request was not answered within {CONFIG.timeout_s:g} s "
                    "(PROTO2PROD_TIMEOUT_S)"
                )
            ), prepared
        except Exception as exc:  # the forward pass raised: the version's or our bug
            log.exception("the forward pass of %s/%s failed", MODEL_NAME, version)
            return Answer.of(
                ModelFailed(
                    f"the model's forward pass failed ({type(exc).__name__}); the service's log "
                    f"has the traceback"
                )
            ), prepared
        body = {"outputs": outputs, "model": MODEL_NAME, "version": version}
        return Answer(200, body, {"X-Model-Version": version}), prepared

    async def _prepare_off_loop(self, predictor: Any, inputs: list[Any], deadline: float) -> list:
        loop = asyncio.get_running_loop()
        given_up = threading.Event()  # the request timed out: stop spending CPU on it
        work = loop.run_in_executor(
            self._preparers, lambda: predictor.prepare_each(inputs, stop=given_up.is_set)
        )
        try:
            return await asyncio.wait_for(work, deadline - loop.time())
        finally:
            given_up.set()

    @staticmethod
    def _count(answer: Answer, version: str) -> Answer:
        metrics.count_request(MODEL_NAME, version, answer.status)
        return answer


# Listed first = outermost: no error escapes without an answer; an oversized or non-JSON
# body is refused before it is read; /admin/* and /predict share one body budget.
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
    BodyLimit, max_bytes=int(CONFIG.max_body_mb * 1024 * 1024), json_paths=("/predict",)
)
SERVICE.add_asgi_middleware(AdminBodies, reader=BODIES)
SERVICE.add_asgi_middleware(
    PredictEndpoint,
    answerer=lambda: _service.answer if _service is not None else None,
    authorize=lambda header: KEYS.check(header, "predict"),
    reader=BODIES,
)
