"""The same model behind BentoML's own adaptive batching: the `bentoml-batchable` peer.

    PROTO2PROD_BENCH_REF=digits@production \\
        bentoml serve proto2prod.benchmarks.apps.bentoml_batchable:Batchable --port 3000

What a BentoML user writes without proto2prod: one `@bentoml.api(batchable=True)` method
that prepares and runs a list of items. It gets the same `Predictor`, the same torch
threads and the same server options as proto2prod's service (access log off, no tracing
spans, uvicorn on uvloop + httptools), so what differs is the request path and the
batcher: BentoML's dispatcher against proto2prod's `/predict` route and micro-batcher.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml

REF = os.environ.get("PROTO2PROD_BENCH_REF", "")


@bentoml.service(
    name="bentoml_batchable",
    logging={"access": {"enabled": False}},
    tracing={"sample_rate": 0.0, "excluded_urls": ["/predict", "/livez", "/readyz"]},
)
class Batchable:
    def __init__(self) -> None:
        from proto2prod.benchmarks.apps.model_app import load

        self.predictor = load(REF)

    # The batch is a list of items, one per request part; BentoML concatenates the requests'
    # lists and splits the outputs back, so a client posts {"inputs": [item, ...]} as to
    # proto2prod's service.
    @bentoml.api(route="/predict", batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def predict(self, inputs: list[Any]) -> list[Any]:
        return self.predictor.run([self.predictor.prepare(item) for item in inputs])
