"""The Streamlit prototype: `proto2prod prototype FILE.py --ui streamlit`.

Streamlit runs this file as a script on every interaction; the backend (the model
in-process, or the service over HTTP) is built once per process (`st.cache_resource`).
Settings come from `PROTO2PROD_UI_*`, which the CLI sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from proto2prod.prototype.backends import Backend, in_process, remote
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
    """One widget per input part, starting from the picked example; the JSON item."""
    names = [f"Example {i + 1}" for i in range(len(spec.examples))]
    pick = st.selectbox("Start from an example", names, index=0)
    example = spec.inputs.split(spec.examples[names.index(pick)])
    return spec.inputs.join(
        [
            field.streamlit_input(st, value, key=f"input-{key}")
            for (key, field), value in zip(spec.inputs.parts(), example, strict=True)
        ]
    )


def show(spec: UISpec, backend: Backend, item: Any) -> None:
    if item is None:
        st.error("Give every input first.")
        return
    if spec.generates:
        stream(spec, backend, item)
        return
    outcome = backend.predict([item])[0]
    if outcome.error is not None:
        st.error(outcome.error)
        return
    where = "in-process" if backend.source == "in-process" else f"service {backend.source}"
    image = spec.inputs.image_of(item)
    values = spec.outputs.split(outcome.output)
    for (_, field), value in zip(spec.outputs.parts(), values, strict=True):
        field.streamlit_show(st, value, image)
    st.caption(f"Answered by {spec.name} version {outcome.version} ({where})")


def stream(spec: UISpec, backend: Backend, item: Any) -> None:
    """A generative model's text, written as it comes (`st.write_stream`)."""
    said: dict[str, str | None] = {"version": None, "error": None}

    def chunks() -> Any:
        for outcome in backend.stream(item):
            if outcome.error is not None:
                said["error"] = outcome.error
                return
            said["version"] = outcome.version
            yield outcome.output

    st.markdown(f"**{spec.outputs.name}**")
    st.write_stream(chunks())
    if said["error"]:
        st.error(said["error"])
        return
    where = "in-process" if backend.source == "in-process" else f"service {backend.source}"
    st.caption(f"Answered by {spec.name} version {said['version']} ({where})")


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
