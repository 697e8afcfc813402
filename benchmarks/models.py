"""Which models a benchmark runs: the bundled examples, or a user's registered version.

`--model REF` takes a version from the user's registry (read only): its weights are
verified, then registered twice in the benchmark's throwaway registry (version 1 as
`production`, version 2 for the update scenario), so a benchmark never moves an alias in
the user's registry.
"""

from __future__ import annotations

from pathlib import Path

from proto2prod.registry.reference import ModelRef

EXAMPLES = {
    "digits": "proto2prod.examples.digits:Digits",
    "heavy": "proto2prod.examples.heavy:Shapes",
    "wine": "proto2prod.examples.tabular:Wine",
    # not classifiers: a vector out, and two named inputs and outputs
    "embed": "proto2prod.examples.embed:Embed",
    "counting": "proto2prod.examples.counting:Counting",
    "reviews": "proto2prod.examples.reviews:Reviews",
    "segment": "proto2prod.examples.segment:Segment",
    # generative: measured as concurrent streams (benchmarks/streams.py)
    "textgen": "proto2prod.examples.textgen:TextGen",
}


def takes_images(entry: str) -> bool:
    """Models whose one input is an image are also measured through Gradio's upload route
    (IMAGE_ONLY: one uploaded file per call; a model with named inputs takes more)."""
    from proto2prod.definition import load_definition

    inputs = load_definition(entry, check=False).model.inputs
    return bool(inputs.takes_images and len(inputs.parts()) == 1)


def generates(entry: str) -> bool:
    """Generative models (`fields.Text(stream=True)`) are measured as concurrent streams."""
    from proto2prod.definition import load_definition

    return load_definition(entry, check=False).model.generates


def recorded_entry(ref: str) -> str:
    """The entry point a registered version recorded, from the user's registry."""
    from proto2prod import Settings
    from proto2prod.errors import IncompatibleVersion
    from proto2prod.registry import Registry

    info = Registry(Settings.from_env()).resolve(ModelRef.parse(ref), with_metrics=False)
    recorded = info.tags.get("proto2prod.entry")
    if not recorded:
        raise IncompatibleVersion(
            f"{info.name}/{info.version} records no definition entry point: publish it with "
            f"proto2prod train FILE.py"
        )
    return recorded


def import_version(ref: str, home: Path) -> None:
    """Copy `ref` from the user's registry into the benchmark registry at `home`, twice."""
    from safetensors.torch import load_file

    from proto2prod import Settings, Trained
    from proto2prod.definition import load_definition
    from proto2prod.registry import Registry, fetch, publish

    local = fetch(Registry(Settings.from_env()), ModelRef.parse(ref))
    definition = load_definition(recorded_entry(ref))
    trained = Trained(weights=load_file(str(local.weights)), metrics=dict(local.info.metrics))
    bench = Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))
    publish(bench, definition, trained, alias="production")
    publish(bench, definition, trained)
