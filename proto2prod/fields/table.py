"""fields.Table: one row of named numeric features, `{"feature": value, ...}` or a list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError
from proto2prod.fields.arrays import finite_float32
from proto2prod.fields.field import Field, is_number, type_name

if TYPE_CHECKING:
    import numpy as np


class Table(Field):
    """One row of named numeric features: `{"feature": value, ...}` or a list in order."""

    kind = "table"
    can_input = True

    def __init__(
        self, *, features: Sequence[str], name: str | None = None, description: str = ""
    ) -> None:
        features = list(features)
        if not features or len(set(features)) != len(features):
            raise DefinitionError("fields.Table(features=...): give one or more distinct names")
        super().__init__(name=name, description=description)
        self.features = features

    def _params(self) -> dict[str, Any]:
        return {"features": self.features}

    @property
    def expected(self) -> str:
        return (
            f"an object with the {len(self.features)} numeric features "
            f"{self.features[:3] + ['...'] if len(self.features) > 3 else self.features}, "
            f"or a list of {len(self.features)} numbers in that order"
        )

    def decode(self, value: Any, *, index: int | None = None) -> np.ndarray:
        import numpy as np

        expected = self.expected
        if isinstance(value, Mapping):
            missing = [f for f in self.features if f not in value]
            unknown = [k for k in value if k not in self.features]
            if missing:
                raise self._invalid(f"missing feature '{missing[0]}'", expected, index)
            if unknown:
                raise self._invalid(f"unknown feature '{unknown[0]}'", expected, index)
            values = [value[f] for f in self.features]
        elif isinstance(value, list):
            if len(value) != len(self.features):
                raise self._invalid(f"got a list of {len(value)} values", expected, index)
            values = value
        else:
            raise self._invalid(f"got {type_name(value)}", expected, index)
        for feature, v in zip(self.features, values, strict=True):
            if not is_number(v) or not finite_float32(v):
                raise self._invalid(
                    f"feature '{feature}' is {type_name(v)}, not a finite number within ±3.4e38",
                    expected,
                    index,
                )
        return np.asarray(values, dtype=np.float32)

    def json_schema(self) -> dict[str, Any]:
        n = len(self.features)
        return {
            "title": self.name,
            "description": self.description,
            "oneOf": [
                {
                    "type": "object",
                    "properties": {f: {"type": "number"} for f in self.features},
                    "required": self.features,
                    "additionalProperties": False,
                },
                {"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n},
            ],
        }

    def input_statistics(self, item: Any, tensor: Any, prefix: str) -> dict[str, float]:
        """Each feature's value."""
        row = [item[f] for f in self.features] if isinstance(item, Mapping) else item
        return {f"{prefix}.{f}": float(v) for f, v in zip(self.features, row, strict=True)}

    def gradio_input(self) -> Any:
        import gradio as gr

        n = len(self.features)
        return gr.Dataframe(
            headers=self.features,
            row_count=1,
            row_limits=(1, 1),
            column_count=n,
            column_limits=(n, n),
            datatype="number",
            type="array",
            label=self.name,
        )

    def gradio_item(self, value: Any, *, wire: bool) -> Any:
        if value is None:
            return None
        rows = value.values.tolist() if hasattr(value, "values") else value
        row = rows[0] if rows and isinstance(rows[0], list | tuple) else rows
        return [float(v) for v in row]

    def gradio_example(self, example: Any) -> Any:
        return [self.decode(example).tolist()]

    def streamlit_input(self, st: Any, example: Any, key: str) -> Any:
        row = self.decode(example).tolist()
        cols = st.columns(3)
        return [
            cols[i % 3].number_input(name, value=float(v), format="%.4f", key=f"{key}.{name}")
            for i, (name, v) in enumerate(zip(self.features, row, strict=True))
        ]
