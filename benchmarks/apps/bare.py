"""The bare reference server: what `/predict` would cost with nothing around the model.

    python -m proto2prod.benchmarks.apps.bare REF PORT

Raw ASGI (no framework), an asyncio micro-batcher of up to 32 items that waits at most
1 ms for company, around the same version loaded with MLflow's own
`mlflow.pyfunc.load_model`, on the service's server stack (uvicorn with uvloop and
httptools, no access log). No limits, no auth, no metrics, no per-item errors: a request
with a bad item fails whole (500). The benchmark's `service` against `bare` is the cost of
everything proto2prod adds to a request.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

MAX_BATCH = 32
WAIT_S = 0.001

Scope = dict[str, Any]


class Batcher:
    """Requests' items joined into one `predict` call per batch, on the event loop."""

    def __init__(self, predict: Any) -> None:
        self.predict = predict
        self.queue: asyncio.Queue[tuple[list[Any], asyncio.Future[list[Any]]]] = asyncio.Queue()

    async def submit(self, items: list[Any]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0])
            deadline = loop.time() + WAIT_S
            while size < MAX_BATCH:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
                size += len(batch[-1][0])
            self._answer(batch)

    def _answer(self, batch: list[tuple[list[Any], asyncio.Future[list[Any]]]]) -> None:
        try:
            outputs = self.predict([item for items, _ in batch for item in items])
        except Exception as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        start = 0
        for items, future in batch:
            future.set_result(outputs[start : start + len(items)])
            start += len(items)


def app(predict: Any) -> Any:
    batcher = Batcher(predict)

    async def asgi(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            running = asyncio.get_running_loop().create_task(batcher.run())
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            running.cancel()
            await send({"type": "lifespan.shutdown.complete"})
            return
        answer: dict[str, Any] = {"ok": True}
        status = 200
        if scope["path"] == "/predict" and scope["method"] == "POST":
            body = b""
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            try:
                inputs = json.loads(body)["inputs"]
            except (ValueError, KeyError, TypeError) as exc:  # the caller's body: a 400
                inputs, status = None, 400
                answer = {"error": "InvalidRequest", "message": f'send {{"inputs": [...]}} ({exc})'}
            if inputs is not None:
                try:
                    answer = {"outputs": await batcher.submit(inputs)}
                except Exception as exc:  # the model's failure: every item of its batch, a 500
                    status, answer = 500, {"error": type(exc).__name__, "message": str(exc)}
        payload = json.dumps(answer).encode()
        length = str(len(payload)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", length)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return asgi


def main(ref: str, port: int) -> None:
    import mlflow
    import uvicorn

    model = mlflow.pyfunc.load_model(f"models:/{ref}")
    uvicorn.run(
        app(model.predict),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
