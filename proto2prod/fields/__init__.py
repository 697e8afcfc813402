"""Typed input and output fields: the one schema every front end derives from.

A field validates a JSON value (`decode`), turns a network's output row into JSON
(`encode`), describes itself as JSON Schema, and knows how each front end shows it. The
service's request models, the UIs' components, the MLflow signature metadata, the drift
statistics, the shadow comparison and the benchmark's payloads all ask the field, so there
is no parallel schema per front end. One module per kind:

| kind | in | out | JSON |
|---|---|---|---|
| Image | yes | yes | base64 PNG/JPEG (in: also nested lists of 0-255) |
| Tensor | yes | yes | nested list of numbers (`dtype` float32 or int64, `None` dims) |
| Table | yes | | `{"feature": number}` or a list in order |
| Text | yes | yes | a string |
| Number | yes | yes | a number |
| Label | | yes | `{"label": class, "scores": {class: p}}` |
| Boxes | | yes | `[{"label", "score", "box": [x0, y0, x1, y1]}]` |

A dict of fields (`inputs = {"image": fields.Image(...), "hint": fields.Number()}`) is a
`Record`: an object with those keys. numpy, Pillow and the UI libraries are imported inside
the methods: `import proto2prod` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proto2prod.errors import DefinitionError
from proto2prod.fields.boxes import Boxes
from proto2prod.fields.field import Difference, Field
from proto2prod.fields.image import Image
from proto2prod.fields.label import Label
from proto2prod.fields.number import Number
from proto2prod.fields.record import Record, as_field
from proto2prod.fields.table import Table
from proto2prod.fields.tensor import Tensor
from proto2prod.fields.text import Text

KINDS: dict[str, type[Field]] = {
    cls.kind: cls for cls in (Image, Tensor, Table, Text, Number, Label, Boxes, Record)
}


def from_spec(spec: Mapping[str, Any]) -> Field:
    """Rebuild a field from its `spec()`: a remote UI gets its fields from the service."""
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind not in KINDS:
        raise DefinitionError(f"unknown field kind {kind!r}; known: {sorted(KINDS)}")
    if kind == Record.kind:
        parts = {key: from_spec(part) for key, part in params.pop("fields").items()}
        return Record(parts, **params)
    return KINDS[kind](**params)


__all__ = [
    "Boxes",
    "Difference",
    "Field",
    "Image",
    "Label",
    "Number",
    "Record",
    "Table",
    "Tensor",
    "Text",
    "as_field",
    "from_spec",
]
