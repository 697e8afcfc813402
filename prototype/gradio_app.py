"""A Gradio app built from a model's fields, backed in-process or by the service.

Concurrency, deliberately: the queue's `concurrency_limit` and `batch=True` are set per
backend. In-process, one worker runs batches of up to 32 queued requests: the model is the
bottleneck and one forward pass over 32 items costs far less than 32 passes (Gradio's
default, concurrency 1 and no batching, serves one user at a time). Remote, the function
only waits on the service over HTTP, so, as Gradio's docs advise for functions that call an
external API, the queue has no concurrency limit: batches of up to 16 go to the service,
whose own batcher merges them further (on a 2-core machine limits of 8, 32 and none
measured the same, the front end's CPU being the bound: the benchmark's queue scenario).
Both are settable (`--concurrency`, 0 for no limit; `--batch-size`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import gradio as gr

from proto2prod import fields
from proto2prod.fields.image import CSS as IMAGE_CSS
from proto2prod.prototype.backends import Backend, Outcome
from proto2prod.prototype.spec import UISpec

# (concurrency_limit, max_batch_size); None: no limit
DEFAULTS: dict[str, tuple[int | None, int]] = {"in-process": (1, 32), "remote": (None, 16)}
MAX_FILE_SIZE = "10mb"


def _sketchpad(field: fields.Field) -> Any | None:
    """For a model whose one input is an image, a canvas to draw on (black ink on white)."""
    if not (field.takes_images and len(field.parts()) == 1):
        return None
    brush = gr.Brush(default_size=22, colors=["#000000"], color_mode="fixed")
    return gr.Sketchpad(
        type="numpy", label="Or draw one", canvas_size=(280, 280), format="png", brush=brush
    )


def _shown(spec: UISpec, item: Any, outcome: Outcome) -> list[Any]:
    """One value per output component: each part's rendering of its answer (boxes drawn on
    the input's picture), or its empty value for an error."""
    parts = spec.outputs.parts()
    if outcome.error is not None:
        return [field.gradio_shown(None, None) for _, field in parts]
    image = spec.inputs.image_of(item) if item is not None else None
    values = spec.outputs.split(outcome.output)
    return [field.gradio_shown(v, image) for (_, field), v in zip(parts, values, strict=True)]


def _note(spec: UISpec, backend: Backend, outcome: Outcome) -> str:
    if outcome.error is not None:
        return f"⚠️ {outcome.error}"
    where = "in-process" if backend.source == "in-process" else f"service {backend.source}"
    return f"Answered by **{spec.name} version {outcome.version}** ({where})"


def build(
    spec: UISpec, backend: Backend, *, concurrency: int | None = None, batch_size: int | None = None
) -> gr.Blocks:
    """The app: inputs from `spec.inputs`, outputs from `spec.outputs`, clickable examples."""
    mode = "in-process" if backend.source == "in-process" else "remote"
    # unset: the mode's default; 0: no limit (Gradio's None), for a function that waits
    limit = DEFAULTS[mode][0] if concurrency is None else (concurrency or None)
    batch_size = batch_size or DEFAULTS[mode][1]

    inputs, outputs = spec.inputs.parts(), spec.outputs.parts()

    def items_of(columns: tuple[list[Any], ...]) -> list[Any]:
        """Gradio hands a batch as one list per input component: one JSON item per row."""
        return [
            spec.inputs.join(
                [
                    field.gradio_item(v, wire=mode == "remote")
                    for (_, field), v in zip(inputs, row, strict=True)
                ]
            )
            for row in zip(*columns, strict=True)
        ]

    def predict(*columns: list[Any]) -> tuple[list[Any], ...]:
        items = items_of(columns)
        present = [i for i, item in enumerate(items) if item is not None]
        outcomes = [Outcome(error="Give every input first.")] * len(items)
        if present:
            answers = backend.predict([items[i] for i in present])
            for i, outcome in zip(present, answers, strict=True):
                outcomes[i] = outcome
        shown = [_shown(spec, item, o) for item, o in zip(items, outcomes, strict=True)]
        per_output = [[row[k] for row in shown] for k in range(len(outputs))]
        return (*per_output, [_note(spec, backend, o) for o in outcomes])

    def generate(*values: Any) -> Iterator[tuple[str, str]]:
        """A generative model: the text grows in its box as the chunks come."""
        item = spec.inputs.join(
            [
                f.gradio_item(v, wire=mode == "remote")
                for (_, f), v in zip(inputs, values, strict=True)
            ]
        )
        if item is None:
            yield "", "⚠️ Give every input first."
            return
        text = ""
        for outcome in backend.stream(item):
            if outcome.error is not None:
                yield text, _note(spec, backend, outcome)
                return
            text += outcome.output
            yield text, _note(spec, backend, outcome)

    events: dict[str, Any] = {
        "batch": True,
        "max_batch_size": batch_size,
        "concurrency_limit": limit,
    }
    if spec.generates:  # a generator function streams; Gradio cannot batch those
        predict, events = generate, {"concurrency_limit": limit}  # type: ignore[assignment]
    with gr.Blocks(title=spec.title) as app:
        gr.Markdown(f"# {spec.title}\n{spec.description}")
        with gr.Row():
            with gr.Column():
                given = [field.gradio_input() for _, field in inputs]
                button = gr.Button("Predict", variant="primary")
                examples = [
                    [
                        field.gradio_example(v)
                        for (_, field), v in zip(inputs, spec.inputs.split(e), strict=True)
                    ]
                    for e in spec.examples
                ]
                gr.Examples(examples=examples, inputs=given, label="Examples")
                sketch = _sketchpad(spec.inputs)
                draw = gr.Button("Predict the drawing") if sketch is not None else None
            with gr.Column():
                shown = [field.gradio_output() for _, field in outputs]
                note = gr.Markdown(elem_id="answered-by")
        button.click(predict, given, [*shown, note], api_name="predict", **events)
        if sketch is not None and draw is not None:
            draw.click(predict, [sketch], [*shown, note], api_name="predict_drawing", **events)
    return app


def launch(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    block: bool = True,
    mcp_server: bool = False,
) -> str:
    """Serve `app`; with `share`, say in one line when no share link can be made;
    `mcp_server` passes through to Gradio (its MCP tools at /gradio_api/mcp/)."""
    app.queue()
    chatter = io.StringIO()  # Gradio explains a failed share link in ten lines; we use one
    with contextlib.redirect_stdout(chatter):
        app.launch(
            server_name=host,
            server_port=port,
            share=share,
            auth=auth,
            max_file_size=MAX_FILE_SIZE,
            show_error=False,
            prevent_thread_lock=True,
            quiet=True,
            css=IMAGE_CSS,
            mcp_server=mcp_server,
        )
    url = f"http://{host}:{app.server_port}"
    if share and not getattr(app, "share_url", None):
        print(
            f"no share link (it needs internet access to Gradio's share servers): "
            f"serving locally at {url}"
        )
    elif share:
        print(f"share link: {app.share_url}")
    if block:
        app.block_thread()
    return url
