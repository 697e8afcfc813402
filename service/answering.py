"""A `/predict` request's path once its body has been read and parsed (service/predict.py):
the version it stays on, validation and preprocessing, the batcher, the answer; and what
watches that path (a canary's routing in service/rollout.py, drift, metrics).

    PredictEndpoint (body, admission, parse) -> Answering.answer
        -> ModelRuntime.current: the Loaded version (a canary's pick: Rollout.pick)
        -> Predictor.prepare_each (on the loop if small, else in two preparation threads)
        -> MicroBatcher.submit -> Predictor.run (one forward pass per batch)
        -> Answer (200 + X-Model-Version, or the error's status and body)
        -> Rollout.answered (canary score, shadow sample), DriftWatch.observe, metrics
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from proto2prod.errors import (
    InvalidInput,
    InvalidRequest,
    ModelFailed,
    NotReady,
    Overloaded,
    Timeout,
    TooManyItems,
    TooManyRequests,
)
from proto2prod.service import metrics
from proto2prod.service.batcher import MicroBatcher
from proto2prod.service.drift import DriftWatch
from proto2prod.service.http import Answer
from proto2prod.service.predict import RequestInfo
from proto2prod.service.runtime import Loaded, ModelRuntime
from proto2prod.service.stepping import Generation, StepBatcher
from proto2prod.service_settings import ServiceSettings

if TYPE_CHECKING:
    from proto2prod.generation import Prompt
    from proto2prod.predictor import Predictor
    from proto2prod.service.rollout import Rollout

log = logging.getLogger("proto2prod.service")


class Answering:
    """Answers `inputs` on the current version by a deadline; never raises."""

    def __init__(self, config: ServiceSettings, runtime: ModelRuntime, drift: DriftWatch) -> None:
        self.config = config
        self.model = runtime.ref.name
        self.runtime = runtime
        self.drift = drift
        self.rollout: Rollout | None = None
        self.batcher: MicroBatcher[Predictor] = MicroBatcher(
            lambda predictor, tensors: predictor.run(tensors),
            max_batch_size=config.max_batch_size,
            wait_ms=config.batch_wait_ms,
            max_queue=config.max_queue,
            on_batch=self._record_batch,
        )
        self.steps = StepBatcher(
            max_active=config.max_sequences,
            max_waiting=config.max_waiting_sequences,
            on_step=lambda version, size, _: metrics.record_batch(self.model, version, size),
        )
        # Validation and preprocessing of large requests, off the event loop: two threads,
        # since both hold the GIL most of the time (more would only queue for it).
        self._preparers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")

    async def answer(self, inputs: list[Any], deadline: float, info: RequestInfo) -> Answer:
        """Validate, preprocess and batch `inputs` on the current version, by `deadline`.

        `info.small` requests are prepared on the event loop (cheaper than a thread hop);
        others in the preparation threads, which stop between items once the deadline has
        passed, so no request can stall the event loop or outlive its timeout by much.
        `info.key` (the `X-Request-Key` header) keeps a client on one side of a canary.
        """
        loaded = self.runtime.current  # this request stays on this version
        if loaded is None:
            reason = self.runtime.not_ready_reason or "no model loaded yet"
            return self._count(Answer.of(NotReady(reason)), "none")
        rollout = self.rollout
        if rollout is None:
            answer, prepared = await self._answer_on(loaded, inputs, deadline, info.small)
            self._observe(loaded, inputs, prepared, answer)
            return self._count(answer, loaded.version)
        loaded, canary = rollout.pick(loaded, info.key)
        started = time.perf_counter()
        answer, prepared = await self._answer_on(loaded, inputs, deadline, info.small)
        rollout.answered(loaded, canary, time.perf_counter() - started, answer, prepared, info)
        if not canary:
            self._observe(loaded, inputs, prepared, answer)
        return self._count(answer, loaded.version)

    async def _answer_on(
        self, loaded: Loaded, inputs: list[Any], deadline: float, small: bool
    ) -> tuple[Answer, list[Any]]:
        """The answer of `loaded` to `inputs`, and the prepared items (a shadow reuses them)."""
        refused = self._refused(inputs)
        if refused is not None:
            return refused, []
        prepared: list[Any] = []
        predictor = loaded.predictor
        try:
            if small:
                prepared = predictor.prepare_each(inputs)
            else:
                prepared = await self._prepare_off_loop(predictor, inputs, deadline)
            for problem in prepared:
                if isinstance(problem, InvalidInput):
                    raise problem  # the request is refused whole, naming its first bad item
            async with asyncio.timeout_at(deadline):  # no task per request, unlike wait_for
                if predictor.decoder is not None:  # generated: step-batched, whole texts
                    outputs = await self._generate_whole(loaded, prepared, deadline)
                else:
                    outputs = await self.batcher.submit(predictor, prepared)
        except (InvalidInput, Overloaded, TooManyRequests, Timeout) as exc:
            return Answer.of(exc), prepared
        except TimeoutError:
            late = f"the request was not answered within {self.config.timeout_s:g} s"
            return Answer.of(Timeout(f"{late} (PROTO2PROD_TIMEOUT_S)")), prepared
        except Exception as exc:  # the forward pass raised: the version's or our bug
            log.exception("the forward pass of %s/%s failed", self.model, loaded.version)
            failed = f"the model's forward pass failed ({type(exc).__name__})"
            return Answer.of(
                ModelFailed(f"{failed}; the service's log has the traceback")
            ), prepared
        body = {"outputs": outputs, "model": self.model, "version": loaded.version}
        return Answer(200, body, {"X-Model-Version": loaded.version}), prepared

    def start_generation(self, item: Any, timeout_s: float) -> Generation:
        """`item`'s sequence, queued on the current version's decoding steps. Raises the
        refusal: 503 before a version is loaded, 422 for the item (naming the field), 429
        when the queue is full."""
        loaded = self.runtime.current  # the sequence stays on this version to its end
        if loaded is None:
            raise NotReady(self.runtime.not_ready_reason or "no model loaded yet")
        if loaded.predictor.decoder is None:
            raise InvalidRequest(
                f"model '{self.model}' does not generate; POST /predict", field=None, index=None
            )
        prompt = loaded.predictor.prepare(item)
        self._check_cap(prompt, None)
        generation = Generation(
            loaded.predictor, prompt, time.monotonic() + timeout_s, loaded.version
        )
        self.steps.submit(generation)
        return generation

    def _check_cap(self, prompt: Prompt, index: int | None) -> None:
        cap = self.config.max_new_tokens
        if prompt.max_new_tokens > cap:
            raise InvalidInput(
                "max_new_tokens",
                f"{prompt.max_new_tokens} is over this service's cap",
                f"at most {cap} (PROTO2PROD_MAX_NEW_TOKENS)",
                index=index,
                key="max_new_tokens",
            )

    async def _generate_whole(
        self, loaded: Loaded, prompts: list[Any], deadline: float
    ) -> list[str]:
        """/predict on a generative model: each prompt a sequence among the streams."""
        for i, prompt in enumerate(prompts):
            self._check_cap(prompt, i)
        until = time.monotonic() + max(0.0, deadline - asyncio.get_running_loop().time())
        generations = [Generation(loaded.predictor, p, until, loaded.version) for p in prompts]
        try:
            for generation in generations:
                self.steps.submit(generation)
            texts = []
            for generation in generations:
                async for event in generation.stream():
                    if event.error is not None:
                        raise event.error
                texts.append(generation.sequence.text)
            return texts
        finally:
            for generation in generations:
                generation.cancel()

    def _refused(self, inputs: list[Any]) -> Answer | None:
        """An empty list, or more items than one request may hold."""
        if not inputs:
            return Answer.of(InvalidInput("inputs", "the list is empty", "at least one item"))
        limit = self.config.max_items
        if len(inputs) > limit:
            message = (
                f"{len(inputs)} items in one request; the limit is {limit} "
                f"(PROTO2PROD_MAX_ITEMS): send them in several requests"
            )
            return Answer.of(TooManyItems(message, field="inputs", index=None))
        return None

    async def _prepare_off_loop(
        self, predictor: Predictor, inputs: list[Any], deadline: float
    ) -> list[Any]:
        loop = asyncio.get_running_loop()
        given_up = threading.Event()  # the request timed out: stop spending CPU on it
        work = loop.run_in_executor(
            self._preparers, lambda: predictor.prepare_each(inputs, stop=given_up.is_set)
        )
        try:
            async with asyncio.timeout_at(deadline):
                return await work
        finally:
            given_up.set()

    def _observe(
        self, loaded: Loaded, inputs: list[Any], prepared: list[Any], answer: Answer
    ) -> None:
        if answer.status == 200:
            self.drift.observe(
                loaded.version, loaded.reference, inputs, prepared, answer.body["outputs"]
            )

    def _record_batch(self, predictor: Predictor, size: int, seconds: float) -> None:
        """Each forward pass, counted under the version it ran (`/metrics`)."""
        rollout = self.rollout
        if rollout is not None:
            rollout.on_batch(predictor, size, seconds)
        current = self.runtime.current
        if current and current.predictor is predictor:
            version = current.version
        else:  # the challenger's, or a version swapped out while its batch ran
            other = rollout.runtime.current if rollout else None
            version = other.version if other and other.predictor is predictor else "old"
        metrics.record_batch(self.model, version, size)

    def _count(self, answer: Answer, version: str) -> Answer:
        metrics.count_request(self.model, version, answer.status)
        return answer

    async def close(self) -> None:
        await self.batcher.close()
        self.steps.close()
        self._preparers.shutdown(wait=False, cancel_futures=True)
