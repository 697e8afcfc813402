"""fields.Image: a picture in, or a picture out (a mask, an image-to-image result).

JSON: a base64 PNG/JPEG string (with or without a `data:image/...;base64,` prefix), or, as
an input, a nested list `[H][W]` or `[H][W][C]` of pixel values 0-255. An output is always
a base64 PNG. Models resize in `preprocess` (see `fit`), so a drawing of any size works.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError
from proto2prod.fields.arrays import numeric_array
from proto2prod.fields.field import Difference, Field

if TYPE_CHECKING:
    import numpy as np
    import torch

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")
MAX_SIDE = 4096
AGREE_PIXELS = 0.01
"""Two image outputs agree when their mean absolute pixel difference is at most 1 % of 255."""
# Small images (8x8 digits) shown large and sharp rather than as a speck.
CSS = "[id^=input-image] img {image-rendering: pixelated; min-width: 160px; object-fit: contain}"


class Image(Field):
    """An image. `height`, `width`, `channels` are what the network takes (as an input: any
    size comes in, up to `max_side`) or gives (as an output, rows (H, W) or (C, H, W))."""

    kind = "image"
    can_input = True
    can_output = True
    takes_images = True

    def __init__(
        self,
        *,
        height: int,
        width: int,
        channels: int = 1,
        max_side: int = MAX_SIDE,
        name: str | None = None,
        description: str = "",
    ) -> None:
        if channels not in (1, 3):
            raise DefinitionError(f"fields.Image(channels={channels!r}): channels must be 1 or 3")
        if height < 1 or width < 1 or max_side < 1:
            raise DefinitionError("fields.Image: height, width and max_side must be >= 1")
        super().__init__(name=name, description=description)
        self.height, self.width, self.channels, self.max_side = height, width, channels, max_side

    def _params(self) -> dict[str, Any]:
        params = {"height": self.height, "width": self.width, "channels": self.channels}
        if self.max_side != MAX_SIDE:  # only when set: earlier versions recorded no max_side
            params["max_side"] = self.max_side
        return params

    @property
    def expected(self) -> str:
        return (
            f"a base64 PNG/JPEG string or a nested list [H][W] or [H][W][C] of numbers 0-255 "
            f"(C in 1, 3, 4; sides up to {self.max_side})"
        )

    # -- input ----------------------------------------------------------------------------
    def decode(self, value: Any, *, index: int | None = None) -> np.ndarray:
        """Return a float32 array (H, W, channels) with values 0-255."""
        array = (
            self._decode_string(value, index)
            if isinstance(value, str)
            else self._decode_list(value, index)
        )
        return self._to_channels(array)

    def _decode_list(self, value: Any, index: int | None) -> np.ndarray:
        array = numeric_array(self, value, self.expected, index)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise self._invalid(f"got an array of shape {list(array.shape)}", self.expected, index)
        self._check_size(array.shape[0], array.shape[1], index)
        if array.min() < 0 or array.max() > 255:
            raise self._invalid(
                f"pixel values range from {array.min():.10g} to {array.max():.10g}",
                self.expected,
                index,
            )
        return array

    def _decode_string(self, value: str, index: int | None) -> np.ndarray:
        import numpy as np
        from PIL import Image as PILImage
        from PIL import UnidentifiedImageError

        payload = _DATA_URL.sub("", value, count=1)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise self._invalid("the string is not valid base64", self.expected, index) from None
        try:
            with PILImage.open(io.BytesIO(data)) as img:  # reads the header only
                if img.format not in ("PNG", "JPEG"):
                    raise self._invalid(
                        f"the string holds a {img.format} image", self.expected, index
                    )
                self._check_size(img.height, img.width, index)
                pixels = img.convert("L" if self.channels == 1 else "RGB")
                return np.asarray(pixels, dtype=np.float32).reshape(img.height, img.width, -1)
        except PILImage.DecompressionBombError:  # Pillow's own guard, before our size check
            raise self._invalid(
                "the image header claims billions of pixels (a decompression bomb)",
                self.expected,
                index,
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise self._invalid(
                "the string decodes to bytes that are not a PNG or JPEG image",
                self.expected,
                index,
            ) from None

    def _check_size(self, height: int, width: int, index: int | None) -> None:
        if not (1 <= height <= self.max_side and 1 <= width <= self.max_side):
            raise self._invalid(f"the image is {height}x{width}", self.expected, index)

    def _to_channels(self, array: np.ndarray) -> np.ndarray:
        import numpy as np

        have = array.shape[2]
        if have == 4:  # drop alpha
            array, have = array[:, :, :3], 3
        if have == self.channels:
            return array
        if self.channels == 1:  # ITU-R 601 luma, as Pillow's "L" conversion
            luma = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            return luma[:, :, None]
        return np.repeat(array, 3, axis=2)

    def fit(self, array: np.ndarray) -> np.ndarray:
        """Resize an (H, W, C) array to the declared (height, width) by area averaging."""
        import numpy as np
        from PIL import Image as PILImage

        if array.shape[:2] == (self.height, self.width):
            return array
        planes = [
            np.asarray(
                PILImage.fromarray(array[:, :, c].astype(np.float32), mode="F").resize(
                    (self.width, self.height), PILImage.Resampling.BOX
                )
            )
            for c in range(array.shape[2])
        ]
        return np.stack(planes, axis=2).astype(np.float32)

    @staticmethod
    def to_png_base64(array: Any) -> str:
        """Encode an (H, W), (H, W, 1) or (H, W, 3) array of 0-255 values as base64 PNG."""
        import numpy as np
        from PIL import Image as PILImage

        pixels = np.clip(np.rint(np.asarray(array, dtype=np.float32)), 0, 255).astype(np.uint8)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def pixels(self, value: Any) -> np.ndarray:
        """A JSON image (input or output) as a uint8 array (H, W) or (H, W, 3), to show."""
        import numpy as np

        pixels = np.clip(self.decode(value), 0, 255).astype(np.uint8)
        return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels

    def image_of(self, item: Any) -> np.ndarray | None:
        return self.pixels(item)

    def browser_item(self, example: Any) -> Any:
        return self.to_png_base64(self.decode(example))

    # -- output ---------------------------------------------------------------------------
    def encode(self, row: torch.Tensor) -> str:
        """A row (H, W) or (C, H, W) of 0-255 values as a base64 PNG."""
        pixels = row.float().cpu()
        if pixels.ndim == 3:
            pixels = pixels.permute(1, 2, 0)
        return self.to_png_base64(pixels.numpy())

    def output_shape_problem(self, row_shape: Any) -> str | None:
        fits = ((self.height, self.width), (self.channels, self.height, self.width))
        if row_shape in fits:
            return None
        return (
            f"fields.Image output needs rows of shape {list(fits[1])} or {list(fits[0])} "
            f"(values 0-255); the network gives {list(row_shape)}"
        )

    def output_problem(self, value: Any) -> str | None:
        from proto2prod.errors import InvalidInput

        if not isinstance(value, str):
            return f"'{self.name}' should be a base64 PNG string, got {type(value).__name__}"
        try:
            self.decode(value)
        except InvalidInput as exc:
            return f"'{self.name}' is not a readable image: {exc.problem}"
        return None

    def json_schema(self) -> dict[str, Any]:
        pixel = {"type": "number", "minimum": 0, "maximum": 255}
        return {
            "title": self.name,
            "description": self.description or self.expected,
            "oneOf": [
                {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "oneOf": [
                                pixel,
                                {"type": "array", "items": pixel, "minItems": 1, "maxItems": 4},
                            ]
                        },
                    },
                },
            ],
        }

    # -- statistics and comparison --------------------------------------------------------
    def input_statistics(self, item: Any, tensor: Any, prefix: str) -> dict[str, float]:
        """The mean intensity of the tensor the model sees (after preprocessing, so the
        service measures what was recorded), and each channel's mean when there are several;
        of the decoded image where preprocess made no tensor of this part alone."""
        import torch

        if not isinstance(tensor, torch.Tensor):
            tensor = torch.from_numpy(self.decode(item)).permute(2, 0, 1)
        values = {f"{prefix}.mean_intensity": float(tensor.float().mean())}
        if tensor.dim() == 3 and tensor.shape[0] > 1:
            for c, mean in enumerate(tensor.float().mean(dim=(1, 2)).tolist()):
                values[f"{prefix}.channel_{c}_mean"] = mean
        return values

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        return {f"{prefix}.mean_intensity": float(self.decode(output).mean())}

    def compare(self, champion: Any, challenger: Any) -> Difference:
        """Agree: the same size, and a mean |pixel difference| of at most 1 % of 255;
        delta: that mean difference, as a share of 255."""
        from proto2prod.errors import InvalidInput

        try:
            a, b = self.decode(champion), self.decode(challenger)
        except InvalidInput:
            return Difference(False, 1.0)
        if a.shape != b.shape:
            return Difference(False, 1.0)
        delta = float(abs(a - b).mean()) / 255.0
        return Difference(delta <= AGREE_PIXELS, delta)

    # -- Gradio ---------------------------------------------------------------------------
    def gradio_input(self) -> Any:
        import gradio as gr

        # A file path, and no image_mode: Gradio then hands over the upload untouched (no
        # decode, no conversion), and its own bytes go on to the model or the service.
        return gr.Image(
            type="filepath",
            image_mode=None,
            label=f"{self.name}: upload an image",
            format="png",
            sources=["upload", "clipboard"],
            height=240,
            elem_id=f"input-image-{self.name}",
        )

    def gradio_item(self, value: Any, *, wire: bool) -> Any:
        from proto2prod.prototype.convert import file_item, image_item

        if value is None:
            return None
        if isinstance(value, str | Path):  # an upload: its file
            return file_item(value)
        return image_item(value, wire=wire)  # a drawing: its pixels

    def gradio_example(self, example: Any) -> Any:
        return self.pixels(example)

    def gradio_output(self) -> Any:
        import gradio as gr

        return gr.Image(type="numpy", label=self.name, format="png", height=240)

    def gradio_shown(self, output: Any, image: np.ndarray | None) -> Any:
        return None if output is None else shown_large(self.pixels(output))

    # -- Streamlit ------------------------------------------------------------------------
    def streamlit_input(self, st: Any, example: Any, key: str) -> Any:
        upload = st.file_uploader(
            f"{self.name}: upload an image, or keep the example's",
            type=["png", "jpg", "jpeg"],
            key=key,
        )
        if upload is not None:
            st.image(upload.getvalue(), width=160)
            return base64.b64encode(upload.getvalue()).decode()
        st.image(self.pixels(example), width=160, clamp=True)
        return example  # already the JSON item

    def streamlit_show(self, st: Any, output: Any, image: np.ndarray | None) -> None:
        st.image(shown_large(self.pixels(output)), caption=self.name, width=240, clamp=True)


def shown_large(pixels: np.ndarray, side: int = 240) -> np.ndarray:
    """A small picture (a 32x32 mask) enlarged by whole pixels, so a person sees its pixels
    rather than a speck or a blur; a picture of `side` or more is left as it is."""
    import numpy as np

    scale = max(1, side // max(pixels.shape[:2]))
    return np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1) if scale > 1 else pixels
