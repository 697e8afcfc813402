"""fields.Number: one number, a regression output or a one-number input."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError
from proto2prod.fields.arrays import finite_float32
from proto2prod.fields.field import Field, is_number, type_name

if TYPE_CHECKING:
    import numpy as np
    import torch


class Number(Field):
    """A single number: a regression output, or a one-number input.

    As an input it may be bounded (`minimum`, `maximum`, inclusive), whole (`integer`) and
    optional (`default`: a named input a request may leave out, such as a generation
    setting). Each is recorded in the spec only when set, so older versions' specs stay equal.
    """

    kind = "number"
    can_input = True
    can_output = True

    def __init__(
        self,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        integer: bool = False,
        default: float | None = None,
        name: str | None = None,
        description: str = "",
    ) -> None:
        super().__init__(name=name, description=description)
        self.minimum, self.maximum, self.integer = minimum, maximum, integer
        if minimum is not None and maximum is not None and minimum > maximum:
            raise DefinitionError(f"fields.Number(minimum={minimum}, maximum={maximum}): empty")
        if default is not None and self._problem(default):
            raise DefinitionError(f"fields.Number(default={default!r}): not {self.expected}")
        self.default = default

    def _params(self) -> dict[str, Any]:
        given = {"minimum": self.minimum, "maximum": self.maximum, "default": self.default}
        params: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if self.integer:
            params["integer"] = True
        return params

    @property
    def expected(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"{what} of at least {self.minimum:g}"
        if self.maximum is not None:
            return f"{what} of at most {self.maximum:g}"
        return f"{what} within ±3.4e38"

    def _problem(self, value: Any) -> str | None:
        if not is_number(value) or not finite_float32(value):
            return f"got {type_name(value)}"
        if self.integer and not float(value).is_integer():
            return f"got {value!r}, not a whole number"
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            return f"got {value!r}"
        return None

    def decode(self, value: Any, *, index: int | None = None) -> float:
        problem = self._problem(value)
        if problem:
            raise self._invalid(problem, self.expected, index)
        return int(value) if self.integer else float(value)

    def encode(self, row: torch.Tensor) -> float:
        return float(row.reshape(-1)[0].item())

    def output_shape_problem(self, row_shape: Any) -> str | None:
        if tuple(row_shape) in ((), (1,)):
            return None
        return f"fields.Number needs one value per item, the network gives shape {list(row_shape)}"

    def output_problem(self, value: Any) -> str | None:
        if is_number(value) and math.isfinite(value):
            return None
        return f"'{self.name}' should be a finite number, got {value!r}"

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "title": self.name,
            "description": self.description,
            "type": "integer" if self.integer else "number",
        }
        given = {"minimum": self.minimum, "maximum": self.maximum, "default": self.default}
        schema.update((k, v) for k, v in given.items() if v is not None)
        return schema

    def input_statistics(self, item: Any, tensor: Any, prefix: str) -> dict[str, float]:
        return {f"{prefix}.value": float(item)}

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        return {f"{prefix}.value": float(output)}

    def gradio_input(self) -> Any:
        import gradio as gr

        if self.minimum is not None and self.maximum is not None:
            step = 1 if self.integer else (self.maximum - self.minimum) / 100
            return gr.Slider(
                self.minimum, self.maximum, value=self.default, step=step, label=self.name
            )
        return gr.Number(label=self.name, value=self.default, precision=0 if self.integer else None)

    def gradio_item(self, value: Any, *, wire: bool) -> Any:
        if value is None:
            return None
        return int(value) if self.integer else float(value)

    def gradio_output(self) -> Any:
        import gradio as gr

        return gr.Number(label=self.name)

    def streamlit_input(self, st: Any, example: Any, key: str) -> Any:
        if self.integer:
            return st.number_input(
                self.name,
                min_value=None if self.minimum is None else int(self.minimum),
                max_value=None if self.maximum is None else int(self.maximum),
                value=int(example),
                step=1,
                key=key,
            )
        return st.number_input(
            self.name,
            min_value=None if self.minimum is None else float(self.minimum),
            max_value=None if self.maximum is None else float(self.maximum),
            value=float(example),
            key=key,
        )

    def streamlit_show(self, st: Any, output: Any, image: np.ndarray | None) -> None:
        st.metric(self.name, f"{output:.4g}")
