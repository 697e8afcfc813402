"""fields.Text: a string in (the model tokenizes it in `preprocess`) or out (a caption, an
answer; `postprocess` returns the string, a network gives no text of its own).

`fields.Text(stream=True)` as the output makes a generative model: its network gives
next-token logits and proto2prod decodes, token by token (proto2prod/generation.py); the
service streams the text from `POST /generate` and answers `/predict` with the whole of it.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError
from proto2prod.fields.field import Difference, Field, type_name

if TYPE_CHECKING:
    import numpy as np
    import torch


class Text(Field):
    """A string of 1 to `max_length` characters."""

    kind = "text"
    can_input = True
    can_output = True

    def __init__(
        self,
        *,
        max_length: int = 10_000,
        stream: bool = False,
        name: str | None = None,
        description: str = "",
    ) -> None:
        if max_length < 1:
            raise DefinitionError(f"fields.Text(max_length={max_length}): must be >= 1")
        super().__init__(name=name, description=description)
        self.max_length = max_length
        self.stream = stream
        """Generated token by token (an output only): the model generates."""

    def _params(self) -> dict[str, Any]:
        return {"max_length": self.max_length, **({"stream": True} if self.stream else {})}

    @property
    def expected(self) -> str:
        return f"a string of 1 to {self.max_length} characters"

    def decode(self, value: Any, *, index: int | None = None) -> str:
        if not isinstance(value, str):
            raise self._invalid(f"got {type_name(value)}", self.expected, index)
        if not 1 <= len(value) <= self.max_length:
            raise self._invalid(f"the string has {len(value)} characters", self.expected, index)
        return value

    def encode(self, row: torch.Tensor) -> str:
        raise DefinitionError(
            f"fields.Text output '{self.name}': a network gives numbers, not text; write a "
            f"postprocess() that returns the string"
        )

    def output_problem(self, value: Any) -> str | None:
        if isinstance(value, str) and (self.stream or len(value) <= self.max_length):
            return None
        return f"'{self.name}' should be a string of at most {self.max_length} characters"

    def json_schema(self) -> dict[str, Any]:
        return {
            "title": self.name,
            "description": self.description,
            "type": "string",
            "minLength": 1,
            "maxLength": self.max_length,
        }

    def input_statistics(self, item: Any, tensor: Any, prefix: str) -> dict[str, float]:
        return {f"{prefix}.length": float(len(item))}

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        return {f"{prefix}.length": float(len(output))}

    def compare(self, champion: Any, challenger: Any) -> Difference:
        """Agree: the same text; delta: 1 - difflib's similarity ratio of the two."""
        if not isinstance(champion, str) or not isinstance(challenger, str):
            return Difference(False, 1.0)
        ratio = difflib.SequenceMatcher(None, champion, challenger).ratio()
        return Difference(champion == challenger, 1.0 - ratio)

    def gradio_item(self, value: Any, *, wire: bool) -> Any:
        return value if value else None

    def gradio_output(self) -> Any:
        import gradio as gr

        return gr.Textbox(label=self.name, interactive=False, lines=8 if self.stream else 1)

    def streamlit_show(self, st: Any, output: Any, image: np.ndarray | None) -> None:
        st.markdown(f"**{self.name}**")
        st.write(output)
