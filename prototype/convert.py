"""Turn what UI widgets hand over (arrays, rows, text) into the shared JSON encoding."""

from __future__ import annotations

import json
from typing import Any

from proto2prod import fields


def image_item(array: Any) -> str | None:
    """A widget's image (H, W[, C]) as base64 PNG; transparent pixels become white paper.

    A sketchpad hands over RGBA with a transparent background: dropping alpha would turn
    the paper black and the black ink invisible.
    """
    import numpy as np

    if isinstance(array, dict):  # a sketchpad's EditorValue: the flattened canvas
        array = array.get("composite")
    if array is None:
        return None
    pixels = np.asarray(array, dtype=np.float32)
    if pixels.ndim == 3 and pixels.shape[2] == 4 and not pixels[:, :, 3].any():
        return None  # nothing drawn yet
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:4] / 255.0
        pixels = pixels[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
    if pixels.ndim == 3 and pixels.shape[2] == 3 and np.ptp(pixels, axis=2).max() == 0:
        pixels = pixels[:, :, :1]  # grey stored as RGB
    return fields.Image.to_png_base64(pixels)


def example_array(field: fields.Field, example: Any) -> Any:
    """An `examples()` item as the value its widget shows."""
    import numpy as np

    if isinstance(field, fields.Image):
        pixels = np.clip(field.decode(example), 0, 255).astype(np.uint8)
        return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    if isinstance(field, fields.Table):
        return [field.decode(example).tolist()]
    if isinstance(field, fields.Tensor):
        return json.dumps(example)
    return example


def widget_item(field: fields.Field, value: Any) -> Any:
    """The JSON item for a widget value of `field` (None when the widget is empty)."""
    if value is None:
        return None
    if isinstance(field, fields.Image):
        return image_item(value)
    if isinstance(field, fields.Table):
        rows = value.values.tolist() if hasattr(value, "values") else value
        row = rows[0] if rows and isinstance(rows[0], list | tuple) else rows
        return [float(v) for v in row]
    if isinstance(field, fields.Tensor):
        return json.loads(value) if isinstance(value, str) else value
    if isinstance(field, fields.Number):
        return float(value)
    return value


def label_scores(output: Any) -> dict[str, float]:
    """A Label output as {class: probability}, what Gradio's Label shows."""
    return dict(output["scores"]) if isinstance(output, dict) and "scores" in output else {}
