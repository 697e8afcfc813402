"""Turn what UI widgets hand over (arrays, rows, text) into the shared JSON encoding."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from proto2prod import fields


def image_item(array: Any, *, wire: bool = True) -> Any:
    """A widget's image (H, W[, C]): base64 PNG for the wire (`wire`), else the pixel array
    itself, which the Image field takes as is (in-process, no PNG round trip per click).
    Transparent pixels become white paper: a sketchpad hands over RGBA with a transparent
    background, and dropping alpha would turn the paper black and the black ink invisible.
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
    return fields.Image.to_png_base64(pixels) if wire else pixels


def file_item(path: str | Path) -> str:
    """An uploaded image file as the JSON item: its own bytes in base64 when it is a PNG or
    a JPEG (what the Image field takes), so the front end neither decodes nor re-encodes it;
    another format that Gradio accepts (WebP, GIF, BMP) is converted to PNG once."""
    import numpy as np
    from PIL import Image as PILImage

    data = Path(path).read_bytes()
    with PILImage.open(io.BytesIO(data)) as img:  # the header only, unless converted
        if img.format in ("PNG", "JPEG"):
            return base64.b64encode(data).decode()
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    # transparent pixels become white paper, as for a drawing
    alpha = rgba[:, :, 3:4] / 255.0
    return fields.Image.to_png_base64(rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha))
