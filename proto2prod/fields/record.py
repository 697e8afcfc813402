"""fields.Record: named inputs or outputs, what `inputs = {"image": ..., "hint": ...}` means.

A Model's dict of fields becomes a Record (`as_field`). Its JSON value is an object with
exactly those keys; each part decodes, encodes, describes and compares itself, and the
Record says which key a problem is in (`inputs[1].hint: ...`). Parts are one level deep:
a part is a field of its own kind, never another Record.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proto2prod.errors import DefinitionError, InvalidInput
from proto2prod.fields.field import Difference, Field, type_name

if TYPE_CHECKING:
    import numpy as np

_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class Record(Field):
    """Several named fields, one JSON object; keys are Python identifiers, so a dict of
    tensors from `preprocess` can be passed to `forward` by keyword."""

    kind = "record"

    def __init__(
        self, fields: Mapping[str, Field], *, name: str | None = None, description: str = ""
    ) -> None:
        if not fields:
            raise DefinitionError("named fields: give at least one, {'name': fields.Kind(...)}")
        parts: dict[str, Field] = {}
        for key, field in fields.items():
            if not (isinstance(key, str) and key.isidentifier() and set(key) <= _KEY_CHARS):
                raise DefinitionError(
                    f"named fields: {key!r} is not a valid key; use a Python identifier "
                    f"(letters, digits, '_'), it becomes a keyword of forward()"
                )
            if not isinstance(field, Field) or isinstance(field, Record):
                raise DefinitionError(
                    f"named fields: '{key}' must be a field such as fields.Number(); got {field!r}"
                )
            part = copy.copy(field)
            part.name = key  # the key names it everywhere: errors, UIs, statistics
            parts[key] = part
        super().__init__(name=name, description=description)
        self.fields = parts

    @property
    def can_input(self) -> bool:  # type: ignore[override]
        return all(f.can_input for f in self.fields.values())

    @property
    def can_output(self) -> bool:  # type: ignore[override]
        return all(f.can_output for f in self.fields.values())

    @property
    def takes_images(self) -> bool:  # type: ignore[override]
        return any(f.takes_images for f in self.fields.values())

    def __getitem__(self, key: str) -> Field:
        return self.fields[key]

    def keys(self) -> list[str]:
        return list(self.fields)

    def _params(self) -> dict[str, Any]:
        return {"fields": {key: field.spec() for key, field in self.fields.items()}}

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {f!r}" for k, f in self.fields.items()) + "}"

    @property
    def expected(self) -> str:
        return f"an object with the keys {self.keys()}"

    def decode(self, value: Any, *, index: int | None = None) -> dict[str, Any]:
        """A dict of each part's decoded value, for `preprocess`."""
        if not isinstance(value, Mapping):
            raise self._invalid(f"got {type_name(value)}", self.expected, index)
        for key, field in self.fields.items():
            if key not in value and field.default is None:
                raise InvalidInput(key, "it is missing", field.expected, index=index, key=key)
        for key in value:
            if key not in self.fields:
                raise InvalidInput(
                    str(key), "no such key", self.expected, index=index, key=str(key)
                )
        decoded = {}
        for key, field in self.fields.items():
            try:
                decoded[key] = field.decode(value.get(key, field.default), index=index)
            except InvalidInput as exc:
                raise exc.within(key) from None
        return decoded

    def encode(self, row: Any) -> dict[str, Any]:
        """`row` is {key: tensor row} for named outputs."""
        return {key: field.encode(row[key]) for key, field in self.fields.items()}

    def output_shape_problem(self, row_shape: Any) -> str | None:
        """`row_shape` is {key: shape}: each part's rule, naming the part."""
        for key, field in self.fields.items():
            problem = field.output_shape_problem(row_shape[key])
            if problem:
                return f"output '{key}': {problem}"
        return None

    def output_problem(self, value: Any) -> str | None:
        if not isinstance(value, Mapping) or set(value) != set(self.fields):
            return f"the outputs should be an object with exactly the keys {self.keys()}"
        for key, field in self.fields.items():
            problem = field.output_problem(value[key])
            if problem:
                return problem
        return None

    def json_schema(self) -> dict[str, Any]:
        """Flat (no $ref): an object, every key without a default required, no others."""
        return {
            "title": self.name,
            "description": self.description,
            "type": "object",
            "properties": {key: field.json_schema() for key, field in self.fields.items()},
            "required": [key for key, field in self.fields.items() if field.default is None],
            "additionalProperties": False,
        }

    # -- parts ----------------------------------------------------------------------------
    def parts(self) -> list[tuple[str, Field]]:
        return list(self.fields.items())

    def join(self, values: Sequence[Any]) -> Any:
        """The object of the parts' values; None when a required one is missing (an
        optional one left empty is left out: the field's default applies)."""
        parts = list(self.fields.values())
        if any(v is None and f.default is None for f, v in zip(parts, values, strict=True)):
            return None
        return {k: v for k, v in zip(self.fields, values, strict=True) if v is not None}

    def split(self, value: Any) -> list[Any]:
        if not isinstance(value, Mapping):
            return [None] * len(self.fields)
        return [value.get(key, field.default) for key, field in self.fields.items()]

    def image_of(self, item: Any) -> np.ndarray | None:
        for key, field in self.fields.items():
            if field.takes_images and isinstance(item, Mapping) and key in item:
                return field.image_of(item[key])
        return None

    def browser_item(self, example: Any) -> Any:
        return {key: self.fields[key].browser_item(value) for key, value in example.items()}

    # -- statistics and comparison --------------------------------------------------------
    def input_statistics(self, item: Any, tensor: Any, prefix: str) -> dict[str, float]:
        """Each part's statistics, named `input.<key>.<statistic>`; a part gets its own
        tensor when preprocess returned a dict holding its key."""
        found: dict[str, float] = {}
        for key, field in self.fields.items():
            own = tensor.get(key) if isinstance(tensor, Mapping) else None
            value = item.get(key, field.default)
            found.update(field.input_statistics(value, own, f"{prefix}.{key}"))
        return found

    def output_statistics(self, output: Any, prefix: str) -> dict[str, float | str]:
        found: dict[str, float | str] = {}
        for key, field in self.fields.items():
            found.update(field.output_statistics(output[key], f"{prefix}.{key}"))
        return found

    def compare(self, champion: Any, challenger: Any) -> Difference:
        """Agree: every part agrees; delta: the mean of the parts' deltas."""
        if not isinstance(challenger, Mapping):
            return Difference(False, float("inf"))
        parts = [
            field.compare(champion[key], challenger.get(key)) for key, field in self.fields.items()
        ]
        return Difference(all(p.agree for p in parts), sum(p.delta for p in parts) / len(parts))


def as_field(value: Any, name: str) -> Any:
    """A Model's `inputs`/`outputs` as one field: a dict becomes a Record named `name`."""
    if isinstance(value, Mapping):
        return Record(value, name=name)
    return value
