"""The Streamlit prototype: `proto2prod prototype FILE.py --ui streamlit`.

Streamlit runs this file as a script on every interaction; the backend (the model
in-process, or the service over HTTP) is built once per process (`st.cache_resource`).
Settings come from `PROTO2PROD_UI_*`, which the CLI sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from proto2prod import fields
from proto2prod.prototype.backends import Backend, in_process, remote
from proto2prod.prototype.convert import example_array
from proto2prod.prototype.spec import UISpec
from proto2prod.settings import PrototypeSettings, Settings


@st.cache_resource(show_spinner="Loading the model...")
def load(config: PrototypeSettings) -> tuple[Backend, UISpec]:
    if config.backend:
        return remote(config.backend)
    assert config.definition is not None
    weights = Path(config.weights) if config.weights else None
    return in_process(
        config.definition, model_ref=config.model, weights=weights, settings=Settings.from_env()
    )


def choose_input(spec: UISpec) -> Any:
    """The input widget for the model's input field; returns the JSON item or None."""
    field = spec.inputs
    names = [f"Example {i + 1}" for i in range(len(spec.examples))]
    if isinstance(field, fields.Image):
        upload = st.file_uploader("Upload an image", type=["png", "jpg", "jpeg"])
        if upload is not None:
            import base64

            st.image(upload.getvalue(), width=160)
            return base64.b64encode(upload.getvalue()).decode()
        pick = st.selectbox("Or take an example", names, index=0)
        example = spec.examples[names.index(pick)]
        st.image(example_array(field, example), width=160, clamp=True)
        return example  # already the JSON item
    if isinstance(field, fields.Table):
        pick = st.selectbox("Start from an example", names, index=0)
        row = example_array(field, spec.examples[names.index(pick)])[0]
        cols = st.columns(3)
        return [
            cols[i % 3].number_input(name, value=float(v), format="%.4f")
            for i, (name, v) in enumerate(zip(field.features, row, strict=True))
        ]
    if isinstance(field, fields.Number):
        return st.number_input(field.name, value=float(spec.examples[0]))
    return st.text_area(field.name, value=str(spec.examples[0]))


def show(spec: UISpec, backend: Backend, item: Any) -> None:
    outcome = backend.predict([item])[0]
    if outcome.error is not None:
        st.error(outcome.error)
        return
    where = "in-process" if backend.source == "in-process" else f"service {backend.source}"
    if isinstance(spec.outputs, fields.Label):
        st.metric(spec.outputs.name, outcome.output["label"])
        st.bar_chart(outcome.output["scores"], horizontal=True)
    else:
        st.metric(spec.outputs.name, f"{outcome.output:.4g}")
    st.caption(f"Answered by {spec.name} version {outcome.version} ({where})")


def main() -> None:
    st.set_page_config(page_title="proto2prod prototype")
    config = PrototypeSettings.from_env()
    try:
        backend, spec = load(config)
    except Exception as exc:  # a person reads this: the message, never a traceback
        st.error(f"Cannot start: {exc}")
        return
    st.title(spec.title)
    st.write(spec.description)
    item = choose_input(spec)
    if st.button("Predict", type="primary"):
        show(spec, backend, item)


main()
