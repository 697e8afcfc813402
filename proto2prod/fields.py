"""Typed input and output fields: the one schema every front end derives from.

A field validates a JSON value (`decode`), turns a network's output row into JSON (`encode`),
and describes itself as JSON Schema. The service's request models, the UIs' components, the
MLflow signature metadata and the benchmark's payloads all come from here, so there is no
parallel schema per front end.

Shared JSON encodings:
- Image: a nested list `[H][W]` or `[H][W][C]` of pixel values 0-255, or a base64 PNG/JPEG
  string, with or without a `data:image/...;base64,` prefix.
- Label: `{"label": "<class>", "scores": {"<class>": p, ...}}` with the top-k scores.

numpy and Pillow are imported inside the methods: `import proto2prod` stays light.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from proto2prod.errors import DefinitionError, InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import torch

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")


class Field:
    """Base of all fields. `name` labels the field in errors, schemas and UIs."""

    kind: ClassVar[str] = "field"
    can_input: ClassVar[bool] = False
    can_output: ClassVar[bool] = False

    def __init__(self, *, name: str | None = None, description: str = "") -> None:
        self.name = name or self.kind
        self.description = description

    # -- inputs ---------------------------------------------------------------------------
    def decode(self, value: Any, *, index: int | None = None) -> Any:
        """Validate a JSON value and return what `Model.preprocess` receives."""
        raise DefinitionError(f"fields.{type(self).__name__} cannot be used as an input")

    # -- outputs --------------------------------------------------------------------------
    def encode(self, row: torch.Tensor) -> Any:
        """Turn one row of the network's output into this field's JSON value."""
        raise DefinitionError(f"fields.{type(self).__name__} cannot be used as an output")

    def output_shape_problem(self, row_shape: tuple[int, ...]) -> str | None:
        """Why a network output row of this shape cannot be encoded, or None if it can."""
        return None

    def output_problem(self, value: Any) -> str | None:
        """Why `value` (what postprocess returned) is not a valid output, or None if it is.

        Checked on the examples before a version is registered: weights trained elsewhere
        can give NaN or infinite outputs, which are no JSON a client could read.
        """
        return None

    # -- description ----------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """What must stay equal between two versions for them to be interchangeable."""
        return {"kind": self.kind, "name": self.name, **self._params()}

    def _params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"fields.{type(self).__name__}({params})"

    def _invalid(self, problem: str, expected: str, index: int | None) -> InvalidInput:
        return InvalidInput(self.name, problem, expected, index=index)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else f"a {type(value).__name__}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


FLOAT32_MAX = 3.4028234663852886e38


def _finite_float32(value: Any) -> bool:
    """A JSON number the network can take: finite, and within float32's range (a huge
    int would otherwise raise OverflowError, a huge float turn into inf)."""
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and abs(number) <= FLOAT32_MAX


def _numeric_array(field: Field, value: Any, expected: str, index: int | None) -> np.ndarray:
    """A nested JSON list (or, from Python callers, a numpy array) as a float32 array,
    refusing strings, booleans, ragged lists, NaN."""
    import numpy as np

    if not isinstance(value, list | np.ndarray):
        raise field._invalid(f"got {_type_name(value)}", expected, index)
    try:
        raw = np.asarray(value)
    except ValueError:
        raise field._invalid("the nested lists have uneven lengths", expected, index) from None
    if raw.dtype.kind not in "iuf" or raw.size == 0:
        problem = "it is empty" if raw.size == 0 else "it holds values that are not numbers"
        raise field._invalid(problem, expected, index)
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused below
        array = raw.astype(np.float32)
    if not np.isfinite(array).all():
        raise field._invalid(
            "it holds NaN, infinite or out-of-range (beyond ±3.4e38) values", expected, index
        )
    return array


class Image(Field):
    """An image. `height`, `width`, `channels` are what the network takes; any size comes in.

    Models resize in `preprocess` (see `fit`), so a person's drawing of any size works.
    """

    kind = "image"
    can_input = True

    def __init__(
        self,
        *,
        height: int,
        width: int,
        channels: int = 1,
        max_side: int = 4096,
        name: str | None = None,
        description: str = "",
    ) -> None:
        if channels not in (1, 3):
            raise DefinitionError(f"fields.Image(channels={channels!r}): channels must be 1 or 3")
        if height < 1 or width < 1:
            raise DefinitionError("fields.Image: height and width must be >= 1")
        super().__init__(name=name, description=description)
        self.height, self.width, self.channels, self.max_side = height, width, channels, max_side

    def _params(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "channels": self.channels}

    @property
    def _expected(self) -> str:
        return (
            f"a base64 PNG/JPEG string or a nested list [H][W] or [H][W][C] of numbers 0-255 "
            f"(C in 1, 3, 4; sides up to {self.max_side})"
        )

    def decode(self, value: Any, *, index: int | None = None) -> np.ndarray:
        """Return a float32 array (H, W, channels) with values 0-255."""
        array = (
            self._decode_string(value, index)
            if isinstance(value, str)
            else self._decode_list(value, index)
        )
        return self._to_channels(array)

    def _decode_list(self, value: Any, index: int | None) -> np.ndarray:
        array = _numeric_array(self, value, self._expected, index)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise self._invalid(f"got an array of shape {list(array.shape)}", self._expected, index)
        self._check_size(array.shape[0], array.shape[1], index)
        if array.min() < 0 or array.max() > 255:
            raise self._invalid(
                f"pixel values range from {array.min():.10g} to {array.max():.10g}",
                self._expected,
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
            raise self._invalid("the string is not valid base64", self._expected, index) from None
        try:
            with PILImage.open(io.BytesIO(data)) as img:  # reads the header only
                if img.format not in ("PNG", "JPEG"):
                    raise self._invalid(
                        f"the string holds a {img.format} image", self._expected, index
                    )
                self._check_size(img.height, img.width, index)
                pixels = img.convert("L" if self.channels == 1 else "RGB")
                return np.asarray(pixels, dtype=np.float32).reshape(img.height, img.width, -1)
        except PILImage.DecompressionBombError:  # Pillow's own guard, before our size check
            raise self._invalid(
                "the image header claims billions of pixels (a decompression bomb)",
                self._expected,
                index,
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise self._invalid(
                "the string decodes to bytes that are not a PNG or JPEG image",
                self._expected,
                index,
            ) from None

    def _check_size(self, height: int, width: int, index: int | None) -> None:
        if not (1 <= height <= self.max_side and 1 <= width <= self.max_side):
            raise self._invalid(f"the image is {height}x{width}", self._expected, index)

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

    def json_schema(self) -> dict[str, Any]:
        pixel = {"type": "number", "minimum": 0, "maximum": 255}
        return {
            "title": self.name,
            "description": self.description or self._expected,
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


class Tensor(Field):
    """A fixed-shape numeric array sent as a nested list."""

    kind = "tensor"
    can_input = True

    def __init__(
        self, *, shape: Sequence[int], name: str | None = None, description: str = ""
    ) -> None:
        if not shape or any(int(d) < 1 for d in shape):
            raise DefinitionError(f"fields.Tensor(shape={shape!r}): every dimension must be >= 1")
        super().__init__(name=name, description=description)
        self.shape = tuple(int(d) for d in shape)

    def _params(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def decode(self, value: Any, *, index: int | None = None) -> np.ndarray:
        expected = f"a nested list of finite numbers of shape {list(self.shape)}"
        array = _numeric_array(self, value, expected, index)
        if array.shape != self.shape:
            raise self._invalid(f"got shape {list(array.shape)}", expected, index)
        return array

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        for dim in reversed(self.shape):
            schema = {"type": "array", "items": schema, "minItems": dim, "maxItems": dim}
        return {"title": self.name, "description": self.description, **schema}


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

    def decode(self, value: Any, *, index: int | None = None) -> np.ndarray:
        import numpy as np

        expected = (
            f"an object with the {len(self.features)} numeric features "
            f"{self.features[:3] + ['...'] if len(self.features) > 3 else self.features}, "
            f"or a list of {len(self.features)} numbers in that order"
        )
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
            raise self._invalid(f"got {_type_name(value)}", expected, index)
        for feature, v in zip(self.features, values, strict=True):
            if not _is_number(v) or not _finite_float32(v):
                raise self._invalid(
                    f"feature '{feature}' is {_type_name(v)}, not a finite number within ±3.4e38",
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


class Text(Field):
    """A string of at most `max_length` characters; the model tokenizes it in `preprocess`."""

    kind = "text"
    can_input = True

    def __init__(
        self, *, max_length: int = 10_000, name: str | None = None, description: str = ""
    ) -> None:
        super().__init__(name=name, description=description)
        self.max_length = max_length

    def _params(self) -> dict[str, Any]:
        return {"max_length": self.max_length}

    def decode(self, value: Any, *, index: int | None = None) -> str:
        expected = f"a string of 1 to {self.max_length} characters"
        if not isinstance(value, str):
            raise self._invalid(f"got {_type_name(value)}", expected, index)
        if not 1 <= len(value) <= self.max_length:
            raise self._invalid(f"the string has {len(value)} characters", expected, index)
        return value

    def json_schema(self) -> dict[str, Any]:
        return {
            "title": self.name,
            "description": self.description,
            "type": "string",
            "minLength": 1,
            "maxLength": self.max_length,
        }


class Number(Field):
    """A single number: a regression output, or a one-number input."""

    kind = "number"
    can_input = True
    can_output = True

    def decode(self, value: Any, *, index: int | None = None) -> float:
        if not _is_number(value) or not _finite_float32(value):
            raise self._invalid(f"got {_type_name(value)}", "a finite number within ±3.4e38", index)
        return float(value)

    def encode(self, row: torch.Tensor) -> float:
        return float(row.reshape(-1)[0].item())

    def output_shape_problem(self, row_shape: tuple[int, ...]) -> str | None:
        if row_shape in ((), (1,)):
            return None
        return f"fields.Number needs one value per item, the network gives shape {list(row_shape)}"

    def output_problem(self, value: Any) -> str | None:
        if _is_number(value) and math.isfinite(value):
            return None
        return f"'{self.name}' should be a finite number, got {value!r}"

    def json_schema(self) -> dict[str, Any]:
        return {"title": self.name, "description": self.description, "type": "number"}


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

    def output_problem(self, value: Any) -> str | None:
        if not isinstance(value, dict) or value.get("label") not in self.classes:
            return f"'{self.name}' should be {{'label': one of {self.classes}, 'scores': ...}}"
        scores = value.get("scores")
        if not isinstance(scores, dict) or not all(
            k in self.classes and _is_number(p) and 0 <= p <= 1 for k, p in scores.items()
        ):
            return f"'{self.name}' scores should be probabilities 0..1 per class, got {scores!r}"
        return None

    def output_shape_problem(self, row_shape: tuple[int, ...]) -> str | None:
        if row_shape == (len(self.classes),):
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


KINDS: dict[str, type[Field]] = {
    cls.kind: cls for cls in (Image, Tensor, Table, Text, Number, Label)
}


def from_spec(spec: Mapping[str, Any]) -> Field:
    """Rebuild a field from its `spec()`: a remote UI gets its fields from the service."""
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind not in KINDS:
        raise DefinitionError(f"unknown field kind {kind!r}; known: {sorted(KINDS)}")
    return KINDS[kind](**params)


__all__ = ["Field", "Image", "Label", "Number", "Table", "Tensor", "Text", "from_spec"]
