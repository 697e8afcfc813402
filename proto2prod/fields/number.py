"""fields.Number: one number, a regression output or a one-number input."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from proto2prod.fields.arrays import finite_float32
from proto2prod.fields.field import Field, is_number, type_name

if TYPE_CHECKING:
    import numpy as np
    import torch


class Number(Field):
    """A single number: a regression output, or a one-number input."""

    kind = "number"
    can_input = True
    can_output = True

    @property
    def expected(self) -> str:
        return "a finite number within ±3.4e38"

    def decode(self, value: Any, *, index: int | None = None) -> float:
        if not is_number(value) or not finite_float32(value):
            raise self._invalid(f"got {type_name(value)}", self.expected, index)
        return float(value)

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
        return {"title": self.name, "description": self.description, "type": "number"}

    def input_statistics(self, item: Any, tensor: Any, prefix: str) -> dict[str, float]:
        return {f"{prefix}.value": float(item)}

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        return {f"{prefix}.value": float(output)}

    def gradio_input(self) -> Any:
        import gradio as gr

        return gr.Number(label=self.name)

    def gradio_item(self, value: Any, *, wire: bool) -> Any:
        return None if value is None else float(value)

    def gradio_output(self) -> Any:
        import gradio as gr

        return gr.Number(label=self.name)

    def streamlit_input(self, st: Any, example: Any, key: str) -> Any:
        return st.number_input(self.name, value=float(example), key=key)

    def streamlit_show(self, st: Any, output: Any, image: np.ndarray | None) -> None:
        st.metric(self.name, f"{output:.4g}")
