"""The peers proto2prod is measured against, each with the model inside the web process.

    python -m proto2prod.benchmarks.apps.model_app gradio REF PORT  # gr.Interface, defaults
    python -m proto2prod.benchmarks.apps.model_app asgi REF PORT    # a plain Starlette app

`gradio` is the app a user writes first; `asgi` isolates the architecture (model in the web
server) from Gradio's queue. Both load the weights from the registry and predict through
the same `Predictor` as proto2prod, so only the serving around it differs.
"""

from __future__ import annotations

import sys
from typing import Any


def load(ref: str) -> Any:
    """The version's Predictor on the device and precision every server here gets
    (PROTO2PROD_DEVICE, PROTO2PROD_HALF: the benchmark sets them alike for all)."""
    import os

    from proto2prod.definition import load_definition
    from proto2prod.predictor import Predictor
    from proto2prod.registry import Registry, fetch
    from proto2prod.settings import Settings

    local = fetch(Registry(Settings.from_env()), ref)
    definition = load_definition(local.info.tags["proto2prod.entry"])
    half = os.environ.get("PROTO2PROD_HALF", "") in ("1", "true")
    device = os.environ.get("PROTO2PROD_DEVICE") or None
    return Predictor(definition.model, local.weights, device, half=half)


def gradio_default(ref: str, port: int) -> None:
    import gradio as gr

    from proto2prod import fields

    predictor = load(ref)

    def predict(image: Any) -> dict[str, float]:
        return predictor.predict(fields.Image.to_png_base64(image))["scores"]

    demo = gr.Interface(predict, gr.Image(type="numpy"), gr.Label(num_top_classes=3))
    demo.launch(server_name="127.0.0.1", server_port=port, quiet=True)


def asgi(ref: str, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    predictor = load(ref)

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"outputs": predictor.predict_batch(body["inputs"])})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    kind, ref, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    {"gradio": gradio_default, "asgi": asgi}[kind](ref, port)
