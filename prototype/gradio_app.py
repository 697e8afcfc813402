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
from typing import Any

import gradio as gr

from proto2prod import fields
from proto2prod.prototype.backends import Backend, Outcome
from proto2prod.prototype.convert import example_array, label_scores, widget_item
from proto2prod.prototype.spec import UISpec

# (concurrency_limit, max_batch_size); None: no limit
DEFAULTS: dict[str, tuple[int | None, int]] = {"in-process": (1, 32), "remote": (None, 16)}
MAX_FILE_SIZE = "10mb"
# Small images (8x8 digits) shown large and sharp rather than as a speck.
CSS = "#input-image img {image-rendering: pixelated; min-width: 160px; object-fit: contain}"


def _input_component(field: fields.Field) -> Any:
    """The widget a person gives the input field's value with."""
    if isinstance(field, fields.Image):
        # A file path, and no image_mode: Gradio then hands over the upload untouched (no
        # decode, no conversion), and its own bytes go on to the model or the service.
        return gr.Image(
            type="filepath",
            image_mode=None,
            label="Upload an image",
            format="png",
            sources=["upload", "clipboard"],
            height=240,
            elem_id="input-image",
        )
    if isinstance(field, fields.Table):
        return gr.Dataframe(
            headers=field.features,
            row_count=1,
            row_limits=(1, 1),
            column_count=len(field.features),
            column_limits=(len(field.features), len(field.features)),
            datatype="number",
            type="array",
            label=field.name,
        )
    if isinstance(field, fields.Number):
        return gr.Number(label=field.name)
    if isinstance(field, fields.Tensor):
        return gr.Textbox(label=f"{field.name} (JSON, shape {list(field.shape)})", lines=4)
    return gr.Textbox(label=field.name, lines=3)


def _sketchpad(field: fields.Field) -> Any | None:
    """For image inputs, a canvas to draw on (black ink on white paper)."""
    if not isinstance(field, fields.Image):
        return None
    brush = gr.Brush(default_size=22, colors=["#000000"], color_mode="fixed")
    return gr.Sketchpad(
        type="numpy", label="Or draw one", canvas_size=(280, 280), format="png", brush=brush
    )


def _output_component(field: fields.Field) -> Any:
    if isinstance(field, fields.Label):
        return gr.Label(num_top_classes=field.top_k, label=field.name)
    return gr.Number(label=field.name)


def _show(field: fields.Field, outcome: Outcome) -> Any:
    if outcome.error is not None:
        return {} if isinstance(field, fields.Label) else None
    return label_scores(outcome.output) if isinstance(field, fields.Label) else outcome.output


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

    def predict(values: list[Any]) -> tuple[list[Any], list[str]]:
        items = [widget_item(spec.inputs, v, wire=mode == "remote") for v in values]
        present = [i for i, item in enumerate(items) if item is not None]
        outcomes = [Outcome(error="Give an input first.")] * len(items)
        if present:
            answers = backend.predict([items[i] for i in present])
            for i, outcome in zip(present, answers, strict=True):
                outcomes[i] = outcome
        return (
            [_show(spec.outputs, o) for o in outcomes],
            [_note(spec, backend, o) for o in outcomes],
        )

    events: dict[str, Any] = {
        "batch": True, "max_batch_size": batch_size, "concurrency_limit": limit,
    }  # fmt: skip
    with gr.Blocks(title=spec.title) as app:
        gr.Markdown(f"# {spec.title}\n{spec.description}")
        with gr.Row():
            with gr.Column():
                main = _input_component(spec.inputs)
                button = gr.Button("Predict", variant="primary")
                examples = [example_array(spec.inputs, e) for e in spec.examples]
                gr.Examples(examples=[[e] for e in examples], inputs=[main], label="Examples")
                sketch = _sketchpad(spec.inputs)
                draw = gr.Button("Predict the drawing") if sketch is not None else None
            with gr.Column():
                output = _output_component(spec.outputs)
                note = gr.Markdown(elem_id="answered-by")
        button.click(predict, [main], [output, note], api_name="predict", **events)
        if sketch is not None and draw is not None:
            draw.click(predict, [sketch], [output, note], api_name="predict_drawing", **events)
    return app


def launch(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    block: bool = True,
) -> str:
    """Serve `app`; with `share`, say in one line when no share link can be made."""
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
            css=CSS,
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
