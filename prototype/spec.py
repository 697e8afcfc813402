"""What a UI needs to know about a model: its fields, title, description and examples.

In-process it comes from the definition; in remote mode from the service's `/metadata`,
so the thin front end never imports the definition file, torch or the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proto2prod.fields import Field, from_spec
from proto2prod.model import Model


@dataclass(frozen=True)
class UISpec:
    name: str
    title: str
    description: str
    inputs: Field
    outputs: Field
    examples: list[Any]

    @property
    def generates(self) -> bool:
        """A generative model's (`fields.Text(stream=True)`): the UIs stream its text."""
        return bool(getattr(self.outputs, "stream", False))

    @classmethod
    def from_model(cls, model: Model) -> UISpec:
        return cls(
            name=model.name,
            title=model.title,
            description=model.description,
            inputs=model.inputs,
            outputs=model.outputs,
            examples=model.examples(),
        )

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> UISpec:
        ui = meta["ui"]
        return cls(
            name=meta["name"],
            title=ui["title"],
            description=ui["description"],
            inputs=from_spec(ui["spec"]["inputs"]),
            outputs=from_spec(ui["spec"]["outputs"]),
            examples=ui["examples"],
        )
