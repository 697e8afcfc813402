"""LitServe, the closest peer, around the same version: a `LitAPI` that loads it with
MLflow's `mlflow.pyfunc.load_model`, batching up to 32 requests with a 1 ms timeout, access
log off.

    python -m proto2prod.benchmarks.apps.litserve_app REF PORT

`POST /predict` takes `{"inputs": [item]}` (one item, as the benchmark sends) and answers
`{"outputs": [output]}`; LitServe answers `GET /health` itself.
"""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls  # the benchmark starts this module only when LitServe is installed

MAX_BATCH = 32
BATCH_TIMEOUT_S = 0.001


class PyfuncAPI(ls.LitAPI):
    """The registry's pyfunc of `ref`, batched by LitServe."""

    def __init__(self, ref: str) -> None:
        super().__init__(max_batch_size=MAX_BATCH, batch_timeout=BATCH_TIMEOUT_S)
        self.ref = ref

    def setup(self, device: Any) -> None:
        import mlflow

        self.model = mlflow.pyfunc.load_model(f"models:/{self.ref}")

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        # unannotated, as LitServe wants it: it builds the FastAPI endpoint from this
        # signature, and an annotated parameter would become a query parameter
        return request["inputs"][0]

    def batch(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def predict(self, x: list[Any]) -> list[Any]:
        return list(self.model.predict(x))

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"outputs": [output]}


def main(ref: str, port: int) -> None:
    server = ls.LitServer(PyfuncAPI(ref), accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1",
        port=port,
        log_level="warning",
        generate_client_file=False,
        access_log=False,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
