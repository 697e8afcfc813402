"""fields.Tensor: a numeric array as a nested JSON list, in (features, token ids) or out
(an embedding). A `None` dimension takes any length: token ids of different lengths are
batched by the model's `collate` (padded, with a mask the network can ask for)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError
from proto2prod.fields.arrays import DTYPES, numeric_array
from proto2prod.fields.field import Difference, Field, numbers

if TYPE_CHECKING:
    import numpy as np
    import torch

AGREE_COSINE = 0.99
"""Two vector outputs agree when their cosine similarity is at least this."""


class Tensor(Field):
    """A numeric array of `shape` (`None` for a dimension of any length) and `dtype`
    (`float32`, or `int64` for ids an `nn.Embedding` takes)."""

    kind = "tensor"
    can_input = True
    can_output = True

    def __init__(
        self,
        *,
        shape: Sequence[int | None],
        dtype: str = "float32",
        name: str | None = None,
        description: str = "",
    ) -> None:
        if not shape or any(d is not None and int(d) < 1 for d in shape):
            raise DefinitionError(
                f"fields.Tensor(shape={shape!r}): every dimension must be >= 1 (or None: any)"
            )
        if dtype not in DTYPES:
            raise DefinitionError(f"fields.Tensor(dtype={dtype!r}): one of {list(DTYPES)}")
        super().__init__(name=name, description=description)
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = dtype

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"shape": list(self.shape)}
        if self.dtype != "float32":  # only when set: earlier versions recorded no dtype
            params["dtype"] = self.dtype
        return params

    @property
    def expected(self) -> str:
        shape = ["any" if d is None else d for d in self.shape]
        kind = "integers" if self.dtype == "int64" else "finite numbers"
        return f"a nested list of {kind} of shape {shape}".replace("'", "")

    def _fits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )

    def decode(self, value: Any, *, index: int | None = None) -> np.ndarray:
        array = numeric_array(self, value, self.expected, index, self.dtype)
        if not self._fits(array.shape):
            raise self._invalid(f"got shape {list(array.shape)}", self.expected, index)
        return array

    def encode(self, row: torch.Tensor) -> list[Any]:
        return row.float().tolist() if row.is_floating_point() else row.tolist()

    def output_shape_problem(self, row_shape: Any) -> str | None:
        if self._fits(tuple(row_shape)):
            return None
        return (
            f"fields.Tensor output has shape {list(self.shape)}; "
            f"the network gives {list(row_shape)}"
        )

    def output_problem(self, value: Any) -> str | None:
        import numpy as np

        try:
            array = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            return f"'{self.name}' should be a nested list of numbers, got {type(value).__name__}"
        if not self._fits(array.shape) or not np.isfinite(array).all():
            return f"'{self.name}' should be {self.expected}, got shape {list(array.shape)}"
        return None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer" if self.dtype == "int64" else "number"}
        for dim in reversed(self.shape):
            bounds = {"minItems": 1} if dim is None else {"minItems": dim, "maxItems": dim}
            schema = {"type": "array", "items": schema, **bounds}
        return {"title": self.name, "description": self.description, **schema}

    # -- statistics and comparison --------------------------------------------------------
    def input_statistics(self, item: Any, tensor: Any, prefix: str) -> dict[str, float]:
        """The mean of its values (and for variable lengths, the length)."""
        values = list(numbers(item))
        found = {f"{prefix}.mean": sum(values) / len(values)}
        if None in self.shape:
            found[f"{prefix}.length"] = float(len(values))
        return found

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        """The L2 norm and the mean of the vector."""
        values = list(numbers(output))
        return {
            f"{prefix}.norm": math.sqrt(sum(v * v for v in values)),
            f"{prefix}.mean": sum(values) / len(values),
        }

    def compare(self, champion: Any, challenger: Any) -> Difference:
        """Agree: cosine similarity >= 0.99 (embeddings are compared by direction);
        delta: 1 - cosine similarity."""
        a, b = list(numbers(champion)), list(numbers(challenger))
        if len(a) != len(b) or not a:
            return Difference(False, 2.0)
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        cosine = dot / norms if norms else float(a == b)
        return Difference(cosine >= AGREE_COSINE, 1.0 - cosine)

    # -- Gradio and Streamlit -------------------------------------------------------------
    def gradio_input(self) -> Any:
        import gradio as gr

        shape = ["any" if d is None else d for d in self.shape]
        return gr.Textbox(label=f"{self.name} (JSON, shape {shape})".replace("'", ""), lines=4)

    def gradio_item(self, value: Any, *, wire: bool) -> Any:
        return _json_or_text(value)

    def gradio_example(self, example: Any) -> Any:
        return json.dumps(example)

    def streamlit_input(self, st: Any, example: Any, key: str) -> Any:
        shape = ["any" if d is None else d for d in self.shape]
        text = st.text_area(
            f"{self.name} (JSON, shape {shape})".replace("'", ""),
            value=json.dumps(example),
            key=key,
        )
        return _json_or_text(text)

    def streamlit_show(self, st: Any, output: Any, image: np.ndarray | None) -> None:
        st.caption(f"{self.name}: {len(list(numbers(output)))} values")
        st.json(output, expanded=False)


def _json_or_text(value: Any) -> Any:
    """A text box's JSON as its value; text that is no JSON stays a string, which the field
    then refuses with its own message ("got a string; expected a nested list ...")."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value
