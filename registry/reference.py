"""Model references: `digits@production`, `models:/digits@production`, `digits/3`, `digits`
(the newest version, also written `digits/latest` as MLflow does).

A reference is a frozen value; `Registry.resolve` turns it into one concrete version, which
every later log line, response and metric names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proto2prod.errors import InvalidReference

_REF = re.compile(
    r"^(?:models:/)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)"
    r"(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+|latest))?$"
)
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")


@dataclass(frozen=True)
class ModelRef:
    """A model name with either an alias or a version (neither means the newest version)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REF.match(text.strip())
        if not match:
            raise InvalidReference(
                f"'{text}' is not a model reference; write NAME@ALIAS (digits@production), "
                f"NAME/VERSION (digits/3), NAME/latest or NAME, optionally prefixed with models:/"
            )
        version = match["version"]
        # NAME/latest is MLflow's spelling of the newest version: a bare NAME here.
        return cls(match["name"], match["alias"], None if version == "latest" else version)

    @property
    def uri(self) -> str:
        return f"models:/{self}"

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        if self.version:
            return f"{self.name}/{self.version}"
        return self.name


def check_alias(alias: str) -> str:
    """Return `alias` if MLflow accepts it, else raise InvalidReference saying why."""
    if not _ALIAS.match(alias) or re.fullmatch(r"[vV][0-9]+", alias) or alias == "latest":
        raise InvalidReference(
            f"'{alias}' is not a usable alias: use letters, digits, '_' and '-', starting with "
            f"a letter, and not 'latest' or v<number> (MLflow reserves those)"
        )
    return alias
