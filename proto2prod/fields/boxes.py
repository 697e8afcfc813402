"""fields.Boxes: detections, `[{"label": class, "score": p, "box": [x0, y0, x1, y1]}]`.

Box corners are pixels of the input image, x to the right and y down. A network's row is
`(N, 6)`: `x0, y0, x1, y1, score, class index` per candidate; `encode` keeps those scoring
above `min_score`, best first, at most `max_boxes`. A `postprocess` that builds the list
itself (from a mask, after non-maximum suppression) is checked the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError
from proto2prod.fields.field import Difference, Field, is_number

if TYPE_CHECKING:
    import numpy as np
    import torch

MATCH_IOU = 0.5
"""A challenger's box matches a champion's when it has the same label and IoU >= 0.5."""


class Boxes(Field):
    """Labelled, scored boxes: object detection's output."""

    kind = "boxes"
    can_output = True

    def __init__(
        self,
        *,
        classes: Sequence[str],
        max_boxes: int = 100,
        min_score: float = 0.0,
        name: str | None = None,
        description: str = "",
    ) -> None:
        classes = [str(c) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise DefinitionError("fields.Boxes(classes=...): give one or more distinct classes")
        if max_boxes < 1 or not 0 <= min_score < 1:
            raise DefinitionError("fields.Boxes: max_boxes >= 1 and 0 <= min_score < 1")
        super().__init__(name=name, description=description)
        self.classes, self.max_boxes, self.min_score = classes, max_boxes, float(min_score)

    def _params(self) -> dict[str, Any]:
        return {"classes": self.classes, "max_boxes": self.max_boxes, "min_score": self.min_score}

    def encode(self, row: torch.Tensor) -> list[dict[str, Any]]:
        found = []
        for x0, y0, x1, y1, score, cls in row.float().tolist():
            if score > self.min_score and 0 <= int(cls) < len(self.classes):
                found.append(box(self.classes[int(cls)], score, (x0, y0, x1, y1)))
        return sorted(found, key=lambda b: -b["score"])[: self.max_boxes]

    def output_shape_problem(self, row_shape: Any) -> str | None:
        if len(row_shape) == 2 and row_shape[1] == 6:
            return None
        return (
            "fields.Boxes needs rows of shape [N, 6] (x0, y0, x1, y1, score, class index) or a "
            f"postprocess() that returns the list; the network gives {list(row_shape)}"
        )

    def output_problem(self, value: Any) -> str | None:
        if not isinstance(value, list) or len(value) > self.max_boxes:
            return f"'{self.name}' should be a list of at most {self.max_boxes} boxes"
        for i, found in enumerate(value):
            corners = found.get("box") if isinstance(found, dict) else None
            if (
                not isinstance(found, dict)
                or found.get("label") not in self.classes
                or not (is_number(found.get("score")) and 0 <= found["score"] <= 1)
                or not isinstance(corners, list)
                or len(corners) != 4
                or not all(is_number(c) and math.isfinite(c) for c in corners)
                or corners[0] > corners[2]
                or corners[1] > corners[3]
            ):
                return (
                    f"'{self.name}'[{i}] should be {{'label': one of {self.classes}, "
                    f"'score': 0..1, 'box': [x0, y0, x1, y1] with x0 <= x1, y0 <= y1}}"
                )
        return None

    def json_schema(self) -> dict[str, Any]:
        return {
            "title": self.name,
            "description": self.description or "boxes in pixels of the input, best first",
            "type": "array",
            "maxItems": self.max_boxes,
            "items": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "enum": self.classes},
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "box": {
                        "type": "array",
                        "items": {"type": "number"},
                        "minItems": 4,
                        "maxItems": 4,
                    },
                },
                "required": ["label", "score", "box"],
            },
        }

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        """How many boxes, and their mean score (0 with none)."""
        scores = [b["score"] for b in output]
        return {
            f"{prefix}.count": float(len(output)),
            f"{prefix}.mean_score": sum(scores) / len(scores) if scores else 0.0,
        }

    def compare(self, champion: Any, challenger: Any) -> Difference:
        """Agree: as many boxes, each champion box matched (same label, IoU >= 0.5) by its
        own challenger box; delta: 1 - the mean IoU of the best matches (unmatched: 0)."""
        mine, theirs = list(champion), list(challenger or [])
        if not mine and not theirs:
            return Difference(True, 0.0)
        unused, ious = list(theirs), []
        for found in mine:
            best = max(
                (b for b in unused if b["label"] == found["label"]),
                key=lambda b: iou(found["box"], b["box"]),
                default=None,
            )
            ious.append(iou(found["box"], best["box"]) if best else 0.0)
            if best is not None:
                unused.remove(best)
        ious += [0.0] * len(unused)
        agree = len(mine) == len(theirs) and all(v >= MATCH_IOU for v in ious)
        return Difference(agree, 1.0 - sum(ious) / len(ious))

    def gradio_output(self) -> Any:
        import gradio as gr

        return gr.AnnotatedImage(label=self.name, color_map=None, height=240)

    def gradio_shown(self, output: Any, image: np.ndarray | None) -> Any:
        if output is None:
            return None
        canvas = _canvas(output, image)
        return canvas, [
            (tuple(int(round(c)) for c in b["box"]), f"{b['label']} {b['score']:.2f}")
            for b in output
        ]

    def streamlit_show(self, st: Any, output: Any, image: np.ndarray | None) -> None:
        st.image(drawn(output, image), caption=f"{self.name}: {len(output)} found", width=240)
        rows = [{**b, "box": str(b["box"])} for b in output]  # a list cell would show as "[...]"
        if rows:
            st.dataframe(rows)


def box(label: str, score: float, corners: Sequence[float]) -> dict[str, Any]:
    """One detection, rounded for JSON: corners to 0.1 px, the score to 4 digits."""
    return {
        "label": label,
        "score": round(float(score), 4),
        "box": [round(float(c), 1) for c in corners],
    }


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _canvas(output: Any, image: np.ndarray | None) -> np.ndarray:
    """The input picture, or a white one large enough for the boxes when there is none."""
    import numpy as np

    if image is not None:
        return image
    side = int(max([c for b in output for c in b["box"]], default=64)) + 1
    return np.full((side, side), 255, dtype=np.uint8)


def drawn(output: Any, image: np.ndarray | None) -> np.ndarray:
    """The picture with each box outlined and labelled (what Streamlit shows)."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw

    picture = PILImage.fromarray(_canvas(output, image)).convert("RGB")
    scale = max(1, 240 // max(picture.size))
    picture = picture.resize((picture.width * scale, picture.height * scale))
    draw = ImageDraw.Draw(picture)
    for b in output:
        x0, y0, x1, y1 = (c * scale for c in b["box"])
        draw.rectangle((x0, y0, x1, y1), outline=(230, 30, 30), width=2)
        draw.text((x0 + 2, y0 + 1), b["label"], fill=(230, 30, 30))
    return np.asarray(picture)
