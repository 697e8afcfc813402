"""`Field`, the base of every field kind: what each part of proto2prod asks a field.

A kind answers every question about its values in its own module: how JSON decodes
(`decode`) and a network's row encodes (`encode`), its JSON Schema and spec, its Gradio
component and value conversion, its Streamlit widget, its drift statistics and what
"agree" means in a shadow comparison. The front ends, statistics, shadow and benchmark
call these methods and never test a field's type, so a new kind is one module and its
tests. UI libraries are imported inside the UI methods: a definition never loads them.

Named inputs and outputs (`fields.Record`) are a field too; `parts()`, `join()` and
`split()` are how a front end walks them, one widget per part.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from proto2prod.errors import DefinitionError, InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import torch

NUMBER_TOLERANCE = 0.01
"""Two numeric answers agree when they differ by at most 1 % of the larger magnitude (or by
1e-6 near zero)."""


@dataclass(frozen=True)
class Difference:
    """How a challenger's answer differs from the champion's to the same input."""

    agree: bool
    """Whether the two answers would lead a user to the same decision (per kind)."""
    delta: float
    """How far apart they are, 0 when equal (per kind; the docs list each)."""


class Field:
    """Base of all fields. `name` labels the field in errors, schemas and UIs."""

    kind: ClassVar[str] = "field"
    can_input: ClassVar[bool] = False
    can_output: ClassVar[bool] = False
    default: Any = None
    """The value a named input takes when a request leaves it out (None: it is required)."""

    def __init__(self, *, name: str | None = None, description: str = "") -> None:
        self.name = name or self.kind
        self.description = description

    # -- the wire -------------------------------------------------------------------------
    def decode(self, value: Any, *, index: int | None = None) -> Any:
        """Validate a JSON value and return what `Model.preprocess` receives."""
        raise DefinitionError(f"fields.{type(self).__name__} cannot be used as an input")

    def encode(self, row: torch.Tensor) -> Any:
        """Turn one row of the network's output into this field's JSON value."""
        raise DefinitionError(f"fields.{type(self).__name__} cannot be used as an output")

    def encode_rows(self, batch: torch.Tensor) -> list[Any]:
        """The JSON values of a batch of output rows (the first dimension is the items). A
        kind that encodes a whole batch in a few tensor operations overrides it: on a small
        model, per-row tensor calls cost as much as the forward pass."""
        return [self.encode(row) for row in batch]

    def output_shape_problem(self, row_shape: Any) -> str | None:
        """Why a network output row of this shape cannot be encoded, or None if it can."""
        return None

    def output_problem(self, value: Any) -> str | None:
        """Why `value` (what postprocess returned) is not a valid output, or None if it is.

        Checked on the examples before a version is registered: weights trained elsewhere
        can give NaN or infinite outputs, which are no JSON a client could read.
        """
        return None

    # -- description ----------------------------------------------------------------------
    @property
    def expected(self) -> str:
        """What a valid JSON value is, in words: error messages end with it."""
        return f"a {self.kind} value (see the JSON schema)"

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """What must stay equal between two versions for them to be interchangeable, and all
        a remote UI needs to rebuild the field (`from_spec`)."""
        return {"kind": self.kind, "name": self.name, **self._params()}

    def _params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"fields.{type(self).__name__}({params})"

    def _invalid(self, problem: str, expected: str, index: int | None) -> InvalidInput:
        return InvalidInput(self.name, problem, expected, index=index)

    # -- named parts (fields.Record overrides these) --------------------------------------
    def parts(self) -> list[tuple[str, Field]]:
        """The fields a front end shows one widget each for: this one, or a Record's."""
        return [(self.name, self)]

    def join(self, values: Sequence[Any]) -> Any:
        """The JSON value of the parts' values (None when one is missing)."""
        return values[0]

    def split(self, value: Any) -> list[Any]:
        """The parts' values of a JSON value (the inverse of `join`)."""
        return [value]

    def image_of(self, item: Any) -> np.ndarray | None:
        """The picture in an input item, if it holds one: what a Boxes output is drawn on."""
        return None

    def browser_item(self, example: Any) -> Any:
        """An example as a browser sends it (an image as base64 PNG): the benchmark's payload."""
        return example

    takes_images: ClassVar[bool] = False
    """Whether an input holds a picture (the benchmark also sends those through Gradio)."""

    # -- statistics (proto2prod/statistics.py) --------------------------------------------
    def input_statistics(self, item: Any, tensor: Any, prefix: str) -> dict[str, float]:
        """The drift statistics of one input: its JSON `item` and the tensor the model saw
        (None where preprocess made no tensor of this part alone)."""
        return {}

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        """The drift statistics of one output value."""
        return {}

    # -- shadow comparison (service/shadow.py) --------------------------------------------
    def compare(self, champion: Any, challenger: Any) -> Difference:
        """Whether two outputs agree; by default: every number within NUMBER_TOLERANCE."""
        return compare_numbers(champion, challenger)

    # -- Gradio (prototype/gradio_app.py) -------------------------------------------------
    def gradio_input(self) -> Any:
        """The Gradio component a person gives this input with."""
        import gradio as gr

        return gr.Textbox(label=self.name, lines=3)

    def gradio_item(self, value: Any, *, wire: bool) -> Any:
        """The JSON item for the component's value (None when empty); `wire=False`: the
        in-process form, which may skip an encoding (an image's pixels, not a PNG)."""
        return value

    def gradio_example(self, example: Any) -> Any:
        """An example item as the input component shows it."""
        return example

    def gradio_output(self) -> Any:
        import gradio as gr

        return gr.JSON(label=self.name)

    def gradio_shown(self, output: Any, image: np.ndarray | None) -> Any:
        """What the output component shows for `output` (None: an error, show nothing)."""
        return output

    # -- Streamlit (prototype/streamlit_app.py) -------------------------------------------
    def streamlit_input(self, st: Any, example: Any, key: str) -> Any:
        """Draw the widget, starting from `example`'s value, and return its JSON item."""
        return st.text_area(self.name, value=str(example), key=key)

    def streamlit_show(self, st: Any, output: Any, image: np.ndarray | None) -> None:
        st.json(output)


def type_name(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    return names.get(type(value), "null" if value is None else f"a {type(value).__name__}")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numbers(value: Any) -> Iterator[float]:
    """The numbers in a JSON value, depth first (objects by sorted key)."""
    if isinstance(value, bool | int | float):
        yield float(value)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from numbers(value[key])


def compare_numbers(champion: Any, challenger: Any) -> Difference:
    """Agree: the same count of numbers, each within NUMBER_TOLERANCE; delta: mean |a - b|."""
    a, b = list(numbers(champion)), list(numbers(challenger))
    if len(a) != len(b) or not a:
        return Difference(False, math.inf if a or b else 0.0)
    deltas = [abs(x - y) for x, y in zip(a, b, strict=True)]
    agree = all(
        d <= max(NUMBER_TOLERANCE * max(abs(x), abs(y)), 1e-6)
        for d, x, y in zip(deltas, a, b, strict=True)
    )
    return Difference(agree, sum(deltas) / len(deltas))
