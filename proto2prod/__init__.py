"""proto2prod: one model definition, from a Gradio prototype to a registry-fed service.

`import proto2prod` is light (no torch, mlflow or UI library): `Predictor`, which needs
torch, is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proto2prod import fields
from proto2prod.definition import Definition, check_definition, load_definition
from proto2prod.errors import (
    DefinitionError,
    IncompatibleVersion,
    IntegrityError,
    InvalidInput,
    InvalidReference,
    InvalidWeights,
    MissingExtra,
    ModelNotFound,
    Proto2ProdError,
    RegistryError,
    RegistryUnavailable,
    SettingsError,
)
from proto2prod.model import Model, NullProgress, Progress, Trained
from proto2prod.settings import Settings

if TYPE_CHECKING:
    from proto2prod.predictor import Predictor

__version__ = "0.1.0"

__all__ = [
    "Definition",
    "DefinitionError",
    "IncompatibleVersion",
    "IntegrityError",
    "InvalidInput",
    "InvalidReference",
    "InvalidWeights",
    "MissingExtra",
    "Model",
    "ModelNotFound",
    "NullProgress",
    "Predictor",
    "Progress",
    "Proto2ProdError",
    "RegistryError",
    "RegistryUnavailable",
    "Settings",
    "SettingsError",
    "Trained",
    "check_definition",
    "fields",
    "load_definition",
]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from proto2prod.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'proto2prod' has no attribute {name!r}")
