"""fields.Label: a class decision from logits, `{"label": ..., "scores": {class: p}}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError
from proto2prod.fields.field import Difference, Field, is_number

if TYPE_CHECKING:
    import numpy as np
    import torch


class Label(Field):
    """A class decision from logits: `{"label": ..., "scores": {class: p}}`, top-k scores."""

    kind = "label"
    can_output = True

    def __init__(
        self,
        *,
        classes: Sequence[str],
        top_k: int | None = None,
        name: str | None = None,
        description: str = "",
    ) -> None:
        classes = [str(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise DefinitionError("fields.Label(classes=...): give two or more distinct classes")
        if top_k is not None and not 1 <= top_k <= len(classes):
            raise DefinitionError(f"fields.Label(top_k={top_k}): must be 1..{len(classes)}")
        super().__init__(name=name, description=description)
        self.classes = classes
        self.top_k = top_k or len(classes)

    def _params(self) -> dict[str, Any]:
        return {"classes": self.classes, "top_k": self.top_k}

    def encode(self, row: torch.Tensor) -> dict[str, Any]:
        probs = row.float().softmax(dim=-1)
        top = probs.topk(self.top_k)
        scores = {
            self.classes[i]: round(float(p), 6)
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        }
        return {"label": self.classes[int(top.indices[0])], "scores": scores}

    def encode_rows(self, batch: torch.Tensor) -> list[dict[str, Any]]:
        top = batch.float().softmax(dim=-1).topk(self.top_k, dim=-1)
        out = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            scores = {self.classes[i]: round(p, 6) for p, i in zip(values, indices, strict=True)}
            out.append({"label": self.classes[indices[0]], "scores": scores})
        return out

    def output_problem(self, value: Any) -> str | None:
        if not isinstance(value, dict) or value.get("label") not in self.classes:
            return f"'{self.name}' should be {{'label': one of {self.classes}, 'scores': ...}}"
        scores = value.get("scores")
        if not isinstance(scores, dict) or not all(
            k in self.classes and is_number(p) and 0 <= p <= 1 for k, p in scores.items()
        ):
            return f"'{self.name}' scores should be probabilities 0..1 per class, got {scores!r}"
        return None

    def output_shape_problem(self, row_shape: Any) -> str | None:
        if tuple(row_shape) == (len(self.classes),):
            return None
        return (
            f"fields.Label has {len(self.classes)} classes, so the network must give "
            f"{len(self.classes)} logits per item; it gives shape {list(row_shape)}"
        )

    def json_schema(self) -> dict[str, Any]:
        return {
            "title": self.name,
            "description": self.description,
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": self.classes},
                "scores": {
                    "type": "object",
                    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                },
            },
            "required": ["label", "scores"],
        }

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        """The class (a distribution over classes) and the top score."""
        return {
            f"{prefix}.label": str(output["label"]),
            f"{prefix}.top_score": float(max(output["scores"].values())),
        }

    def compare(self, champion: Any, challenger: Any) -> Difference:
        """Agree: the same top label; delta: |champion's top score - the challenger's score
        for that class| (0 for a class a top-k answer left out)."""
        label = champion["label"]
        other = challenger.get("scores", {}) if isinstance(challenger, dict) else {}
        mine = float(champion["scores"].get(label, 0.0))
        theirs = float(other.get(label, 0.0))
        agree = isinstance(challenger, dict) and challenger.get("label") == label
        return Difference(agree, abs(mine - theirs))

    def gradio_output(self) -> Any:
        import gradio as gr

        return gr.Label(num_top_classes=self.top_k, label=self.name)

    def gradio_shown(self, output: Any, image: np.ndarray | None) -> Any:
        return {} if output is None else dict(output["scores"])

    def streamlit_show(self, st: Any, output: Any, image: np.ndarray | None) -> None:
        st.metric(self.name, output["label"])
        st.bar_chart(output["scores"], horizontal=True)
